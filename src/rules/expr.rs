//! Expressions of `meta` rules and `if` lines: rule names and numbers combined with
//! `! && || + - * / == != < <= > >=` and parentheses, with Perl's precedence.
//!
//! Values are numbers: a rule's value is its hit count (0 or 1, more with `tflags multiple`),
//! so `(__A + __B + __C) >= 2` and `__A && !__B` both work.

use std::fmt;

/// A parsed expression whose names are resolved to indices by the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    /// An index into the caller's table of names.
    Name(usize),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(Op, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    Op(&'static str),
    Open,
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError(pub String);

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, ExprError> {
    let mut tokens = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b'_')
            {
                i += 1;
            }
            let digits: String = text[start..i].chars().filter(|c| *c != '_').collect();
            let value = digits
                .parse()
                .map_err(|_| ExprError(format!("bad number `{digits}`")))?;
            tokens.push(Token::Number(value));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            tokens.push(Token::Name(text[start..i].to_string()));
        } else if c == b'(' {
            tokens.push(Token::Open);
            i += 1;
        } else if c == b')' {
            tokens.push(Token::Close);
            i += 1;
        } else {
            let two = text.get(i..i + 2).unwrap_or("");
            let op = match two {
                "&&" | "||" | "==" | "!=" | ">=" | "<=" => {
                    i += 2;
                    match two {
                        "&&" => "&&",
                        "||" => "||",
                        "==" => "==",
                        "!=" => "!=",
                        ">=" => ">=",
                        _ => "<=",
                    }
                }
                _ => {
                    i += 1;
                    match c {
                        b'!' => "!",
                        b'>' => ">",
                        b'<' => "<",
                        b'+' => "+",
                        b'-' => "-",
                        b'*' => "*",
                        b'/' => "/",
                        _ => return Err(ExprError(format!("unexpected `{}`", c as char))),
                    }
                }
            };
            tokens.push(Token::Op(op));
        }
    }
    Ok(tokens)
}

/// Parses `text`; `resolve` maps each name to an index (or refuses it).
pub fn parse(
    text: &str,
    resolve: &mut dyn FnMut(&str) -> Result<usize, ExprError>,
) -> Result<Expr, ExprError> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err(ExprError("empty expression".into()));
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        resolve,
    };
    let expr = parser.binary(0)?;
    if parser.pos != parser.tokens.len() {
        return Err(ExprError(format!(
            "unexpected {:?}",
            parser.tokens[parser.pos]
        )));
    }
    Ok(expr)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    resolve: &'a mut dyn FnMut(&str) -> Result<usize, ExprError>,
}

/// Binary operators from loosest to tightest binding (Perl's order).
const LEVELS: &[&[(&str, Op)]] = &[
    &[("||", Op::Or)],
    &[("&&", Op::And)],
    &[("==", Op::Eq), ("!=", Op::Ne)],
    &[("<", Op::Lt), ("<=", Op::Le), (">", Op::Gt), (">=", Op::Ge)],
    &[("+", Op::Add), ("-", Op::Sub)],
    &[("*", Op::Mul), ("/", Op::Div)],
];

impl Parser<'_> {
    fn binary(&mut self, level: usize) -> Result<Expr, ExprError> {
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        while let Some(Token::Op(op)) = self.tokens.get(self.pos) {
            let Some((_, op)) = LEVELS[level].iter().find(|(s, _)| s == op) else {
                break;
            };
            self.pos += 1;
            let right = self.binary(level + 1)?;
            left = Expr::Binary(*op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        match self.tokens.get(self.pos).cloned() {
            Some(Token::Op("!")) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some(Token::Op("-")) => {
                self.pos += 1;
                Ok(Expr::Neg(Box::new(self.unary()?)))
            }
            Some(Token::Number(n)) => {
                self.pos += 1;
                Ok(Expr::Number(n))
            }
            Some(Token::Name(name)) => {
                self.pos += 1;
                Ok(Expr::Name((self.resolve)(&name)?))
            }
            Some(Token::Open) => {
                self.pos += 1;
                let inner = self.binary(0)?;
                if self.tokens.get(self.pos) != Some(&Token::Close) {
                    return Err(ExprError("missing `)`".into()));
                }
                self.pos += 1;
                Ok(inner)
            }
            other => Err(ExprError(format!(
                "expected a name, number or `(`, found {other:?}"
            ))),
        }
    }
}

impl Expr {
    /// Evaluates with `value(index)` giving each name's value.
    pub fn eval(&self, value: &dyn Fn(usize) -> f64) -> f64 {
        self.eval_lazy(value, &|_| None)
    }

    /// Evaluates like [`Expr::eval`], asking `value` for as few names as it can: names
    /// whose value is `known` already (cheaply) settle `A && B` without asking for the other
    /// side. The result is the same as `eval`'s.
    pub fn eval_lazy(
        &self,
        value: &dyn Fn(usize) -> f64,
        known: &dyn Fn(usize) -> Option<f64>,
    ) -> f64 {
        match self {
            Expr::Number(n) => *n,
            Expr::Name(i) => value(*i),
            Expr::Not(e) => truth(e.eval_lazy(value, known) == 0.0),
            Expr::Neg(e) => -e.eval_lazy(value, known),
            Expr::Binary(op, a, b) => {
                // Perl's && and || return the deciding operand and short-circuit. When the
                // right side of && is known to be 0, so is the whole (whatever the left is).
                if *op == Op::And && b.known(known) == Some(0.0) {
                    return 0.0;
                }
                let a = a.eval_lazy(value, known);
                match op {
                    Op::Or if a != 0.0 => a,
                    Op::And if a == 0.0 => a,
                    Op::Or | Op::And => b.eval_lazy(value, known),
                    _ => apply(*op, a, b.eval_lazy(value, known)),
                }
            }
        }
    }

    /// The value, if the names whose values are `known` settle it.
    pub fn known(&self, known: &dyn Fn(usize) -> Option<f64>) -> Option<f64> {
        match self {
            Expr::Number(n) => Some(*n),
            Expr::Name(i) => known(*i),
            Expr::Not(e) => e.known(known).map(|v| truth(v == 0.0)),
            Expr::Neg(e) => e.known(known).map(|v| -v),
            Expr::Binary(Op::And, a, b) => match a.known(known) {
                Some(a) if a == 0.0 => Some(a),
                Some(_) => b.known(known),
                None => b.known(known).filter(|b| *b == 0.0),
            },
            Expr::Binary(Op::Or, a, b) => match a.known(known) {
                Some(a) if a != 0.0 => Some(a),
                Some(_) => b.known(known),
                None => None,
            },
            Expr::Binary(op, a, b) => Some(apply(*op, a.known(known)?, b.known(known)?)),
        }
    }

    /// Every name index the expression reads.
    pub fn names(&self, out: &mut Vec<usize>) {
        match self {
            Expr::Number(_) => {}
            Expr::Name(i) => out.push(*i),
            Expr::Not(e) | Expr::Neg(e) => e.names(out),
            Expr::Binary(_, a, b) => {
                a.names(out);
                b.names(out);
            }
        }
    }
}

fn truth(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// An operator other than `&&` and `||` (which short-circuit) on its two values.
fn apply(op: Op, a: f64, b: f64) -> f64 {
    match op {
        Op::Eq => truth(a == b),
        Op::Ne => truth(a != b),
        Op::Lt => truth(a < b),
        Op::Le => truth(a <= b),
        Op::Gt => truth(a > b),
        Op::Ge => truth(a >= b),
        Op::Add => a + b,
        Op::Sub => a - b,
        Op::Mul => a * b,
        Op::Div if b == 0.0 => 0.0,
        Op::Div => a / b,
        // Perl's value of a decided `&&`/`||`: the deciding operand.
        Op::Or => {
            if a != 0.0 {
                a
            } else {
                b
            }
        }
        Op::And => {
            if a == 0.0 {
                a
            } else {
                b
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, values: &[(&str, f64)]) -> f64 {
        let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
        let expr = parse(text, &mut |name| {
            names
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| ExprError(format!("unknown {name}")))
        })
        .unwrap();
        expr.eval(&|i| values[i].1)
    }

    #[test]
    fn boolean_and_arithmetic() {
        let v = [("A", 1.0), ("B", 0.0), ("C", 3.0)];
        assert_eq!(eval("A && !B", &v), 1.0);
        assert_eq!(eval("A && B || C", &v), 3.0);
        assert_eq!(eval("(A + B + C) >= 2", &v), 1.0);
        assert_eq!(eval("A + B * C > 1", &v), 0.0, "* binds tighter than +");
        assert_eq!(eval("!(A || B)", &v), 0.0);
        assert_eq!(eval("C / 2 == 1.5", &v), 1.0);
        assert_eq!(eval("-A + 2", &v), 1.0);
    }

    #[test]
    fn lazy_evaluation_skips_what_a_known_zero_settles() {
        let names = ["A", "B", "C"];
        let expr = |text: &str| {
            parse(text, &mut |name| {
                names
                    .iter()
                    .position(|n| *n == name)
                    .ok_or_else(|| ExprError(format!("unknown {name}")))
            })
            .unwrap()
        };
        // B is known to be 0 and C to be 2; A's value is not known and asking costs a scan.
        let known = |i: usize| [None, Some(0.0), Some(2.0)][i];
        let asked = std::cell::RefCell::new(Vec::new());
        let value = |i: usize| {
            asked.borrow_mut().push(names[i]);
            [1.0, 0.0, 2.0][i]
        };
        assert_eq!(expr("A && B").eval_lazy(&value, &known), 0.0);
        assert_eq!(expr("A && !(C && B) && B").eval_lazy(&value, &known), 0.0);
        assert!(
            asked.borrow().is_empty(),
            "A was asked for: {:?}",
            asked.borrow()
        );
        // The same values as eager evaluation everywhere else.
        for text in [
            "A && C",
            "A || B",
            "B || A",
            "A + C > 2",
            "!A && C",
            "(A && C) + B",
        ] {
            let eager = expr(text).eval(&value);
            assert_eq!(expr(text).eval_lazy(&value, &known), eager, "{text}");
        }
        assert_eq!(expr("C && (B || C)").known(&known), Some(2.0));
        assert_eq!(expr("A || C").known(&known), None);
        assert_eq!(expr("A && (B + C < 1)").known(&known), Some(0.0));
    }

    #[test]
    fn errors_are_reported() {
        assert!(parse("A &&", &mut |_| Ok(0)).is_err());
        assert!(parse("(A", &mut |_| Ok(0)).is_err());
        assert!(parse("A $ B", &mut |_| Ok(0)).is_err());
        assert!(parse("X", &mut |n| Err(ExprError(format!("unknown {n}")))).is_err());
    }
}
