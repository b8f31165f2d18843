use geometry::{calc_area, report::report, Shape};

#[test]
fn triangle_area() {
    assert_eq!(calc_area(&Shape::Triangle { base: 4.0, height: 3.0 }), 6.0);
}

#[test]
fn report_total() {
    let shapes = [
        Shape::Rect { width: 1.0, height: 2.0 },
        Shape::Triangle { base: 2.0, height: 2.0 },
    ];
    assert!(report(&shapes).ends_with("total: 4.00\n"));
}
