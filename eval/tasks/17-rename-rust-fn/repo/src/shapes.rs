use std::f64::consts::PI;

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Circle { radius: f64 },
    Rect { width: f64, height: f64 },
    Triangle { base: f64, height: f64 },
}

/// The area of `shape`.
pub fn calc_area(shape: &Shape) -> f64 {
    match shape {
        Shape::Circle { radius } => PI * radius * radius,
        Shape::Rect { width, height } => width * height,
        Shape::Triangle { base, height } => 0.5 * base * height,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rect_area() {
        assert_eq!(calc_area(&Shape::Rect { width: 2.0, height: 3.0 }), 6.0);
    }
}
