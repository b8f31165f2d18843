// Hidden check: copied into tests/ by the task's check command.
use rpn::{evaluate, Error};

#[test]
fn eval_arithmetic() {
    assert_eq!(evaluate("3 4 + 2 *"), Ok(14));
    assert_eq!(evaluate("10 4 -"), Ok(6));
    assert_eq!(evaluate("4 10 -"), Ok(-6));
    assert_eq!(evaluate("20 5 /"), Ok(4));
    assert_eq!(evaluate("7 2 /"), Ok(3));
    assert_eq!(evaluate("2 20 /"), Ok(0));
    assert_eq!(evaluate("5 1 2 + 4 * + 3 -"), Ok(14));
    assert_eq!(evaluate("100 10 2 - /"), Ok(12));
    assert_eq!(evaluate("-3 4 *"), Ok(-12));
    assert_eq!(evaluate("42"), Ok(42));
}

#[test]
fn eval_errors() {
    assert_eq!(evaluate("1 +"), Err(Error::StackUnderflow));
    assert_eq!(evaluate(""), Err(Error::StackUnderflow));
    assert_eq!(evaluate("1 0 /"), Err(Error::DivisionByZero));
    assert_eq!(evaluate("0 1 /"), Ok(0));
    assert_eq!(evaluate("1 2"), Err(Error::Leftover(2)));
    assert_eq!(evaluate("1 x +"), Err(Error::BadToken("x".to_string())));
}
