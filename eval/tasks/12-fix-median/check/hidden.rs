// Hidden check: copied into tests/ by the task's check command.
use stats::{mean, median};

#[test]
fn eval_median_even() {
    assert_eq!(median(&[4, 1, 3, 2]), Some(2.5));
    assert_eq!(median(&[10, 20]), Some(15.0));
    assert_eq!(median(&[7, 7, 1, 9, 2, 100]), Some(7.0));
    assert_eq!(median(&[-3, -1]), Some(-2.0));
}

#[test]
fn eval_median_odd_and_empty() {
    assert_eq!(median(&[5, 1, 3]), Some(3.0));
    assert_eq!(median(&[42]), Some(42.0));
    assert_eq!(median(&[]), None);
}

#[test]
fn eval_mean_unchanged() {
    assert_eq!(mean(&[1, 2, 3, 4]), Some(2.5));
    assert_eq!(mean(&[]), None);
}
