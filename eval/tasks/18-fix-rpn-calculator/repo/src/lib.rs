//! Evaluate integer arithmetic written in reverse Polish notation.

mod eval;
mod lexer;

pub use eval::Error;

/// Evaluate `expr`, e.g. `"3 4 + 2 *"` (which is 14).
pub fn evaluate(expr: &str) -> Result<i64, Error> {
    let tokens = lexer::tokenize(expr)?;
    eval::run(&tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addition_and_multiplication() {
        assert_eq!(evaluate("3 4 + 2 *"), Ok(14));
    }

    #[test]
    fn subtraction_and_division() {
        assert_eq!(evaluate("10 4 -"), Ok(6));
        assert_eq!(evaluate("20 5 /"), Ok(4));
    }

    #[test]
    fn errors() {
        assert_eq!(evaluate("1 +"), Err(Error::StackUnderflow));
        assert_eq!(evaluate("1 0 /"), Err(Error::DivisionByZero));
    }
}
