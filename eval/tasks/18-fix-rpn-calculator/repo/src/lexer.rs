use crate::eval::Error;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Token {
    Num(i64),
    Add,
    Sub,
    Mul,
    Div,
}

pub fn tokenize(expr: &str) -> Result<Vec<Token>, Error> {
    expr.split_whitespace()
        .map(|word| match word {
            "+" => Ok(Token::Add),
            "-" => Ok(Token::Sub),
            "*" => Ok(Token::Mul),
            "/" => Ok(Token::Div),
            _ => word
                .parse()
                .map(Token::Num)
                .map_err(|_| Error::BadToken(word.to_string())),
        })
        .collect()
}
