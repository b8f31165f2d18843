use crate::lexer::Token;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    BadToken(String),
    StackUnderflow,
    DivisionByZero,
    /// More than one value was left on the stack at the end.
    Leftover(usize),
}

pub fn run(tokens: &[Token]) -> Result<i64, Error> {
    let mut stack: Vec<i64> = Vec::new();
    for &token in tokens {
        let op = match token {
            Token::Num(n) => {
                stack.push(n);
                continue;
            }
            op => op,
        };
        let left = stack.pop().ok_or(Error::StackUnderflow)?;
        let right = stack.pop().ok_or(Error::StackUnderflow)?;
        let value = match op {
            Token::Add => left + right,
            Token::Sub => left - right,
            Token::Mul => left * right,
            Token::Div if right == 0 => return Err(Error::DivisionByZero),
            Token::Div => left / right,
            Token::Num(_) => unreachable!(),
        };
        stack.push(value);
    }
    match stack.len() {
        1 => Ok(stack[0]),
        0 => Err(Error::StackUnderflow),
        n => Err(Error::Leftover(n)),
    }
}
