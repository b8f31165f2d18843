use crate::shapes::{calc_area, Shape};

/// One line per shape with its area, then the total.
pub fn report(shapes: &[Shape]) -> String {
    let mut out = String::new();
    let mut total = 0.0;
    for shape in shapes {
        let area = calc_area(shape);
        total += area;
        out.push_str(&format!("{:?}: {:.2}\n", shape, area));
    }
    out.push_str(&format!("total: {:.2}\n", total));
    out
}
