// Hidden check: copied into tests/ by the task's check command.
use geometry::report::report;
use geometry::{area_of, Shape};

#[test]
fn eval_area_of_is_public_at_both_paths() {
    let rect = Shape::Rect { width: 2.0, height: 3.0 };
    assert_eq!(area_of(&rect), 6.0);
    assert_eq!(geometry::shapes::area_of(&rect), 6.0);
    let circle = Shape::Circle { radius: 1.0 };
    assert!((area_of(&circle) - std::f64::consts::PI).abs() < 1e-12);
    assert_eq!(area_of(&Shape::Triangle { base: 4.0, height: 3.0 }), 6.0);
}

#[test]
fn eval_report_unchanged() {
    let shapes = [
        Shape::Rect { width: 1.0, height: 2.0 },
        Shape::Triangle { base: 2.0, height: 2.0 },
    ];
    assert_eq!(
        report(&shapes),
        "Rect { width: 1.0, height: 2.0 }: 2.00\nTriangle { base: 2.0, height: 2.0 }: 2.00\ntotal: 4.00\n"
    );
}
