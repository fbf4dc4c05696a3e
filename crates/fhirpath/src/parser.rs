//! Lexer and Pratt parser for FHIRPath (N1 grammar plus a few 2.0 additions).

use crate::ParseError;
use crate::temporal::Temporal;
use rust_decimal::Decimal;
use std::str::FromStr;

/// Maximum nesting depth of an expression tree.
pub(crate) const MAX_DEPTH: u32 = 200;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Empty,
    Bool(bool),
    Int(i64),
    Dec(Decimal),
    Str(String),
    Date(Temporal),
    DateTime(Temporal),
    Time(Temporal),
    Quantity(Decimal, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

#[derive(Debug, Clone)]
pub(crate) enum ExprKind {
    Lit(Lit),
    This,
    Index,
    Total,
    Var(String),
    /// Member access; `None` focus = the current context (`$this`).
    Member(Option<Box<Expr>>, String),
    /// Function call; `None` focus = the current context.
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    Indexer(Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Is(Box<Expr>, String),
    As(Box<Expr>, String),
}

#[derive(Debug, Clone)]
pub(crate) struct Expr {
    pub kind: ExprKind,
    pub pos: usize,
    pub depth: u32,
}

impl Expr {
    /// Interprets an expression used as a type argument (`ofType(FHIR.Patient)`).
    pub fn as_type_name(&self) -> Option<String> {
        match &self.kind {
            ExprKind::Member(None, n) => Some(n.clone()),
            ExprKind::Member(Some(f), n) => f.as_type_name().map(|q| format!("{q}.{n}")),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Delim(String),
    Str(String),
    Num(String),
    Long(String),
    Date(String),
    Ext(String),
    Special(String),
    Sym(&'static str),
    Eof,
}

struct Lexer<'s> {
    src: &'s str,
    bytes: &'s [u8],
    pos: usize,
}

fn err(position: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        position,
        message: message.into(),
    }
}

impl<'s> Lexer<'s> {
    fn skip_ws(&mut self) -> Result<(), ParseError> {
        loop {
            while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            if self.src[self.pos..].starts_with("//") {
                while self.pos < self.bytes.len() && self.bytes[self.pos] != b'\n' {
                    self.pos += 1;
                }
            } else if self.src[self.pos..].starts_with("/*") {
                match self.src[self.pos + 2..].find("*/") {
                    Some(i) => self.pos += 2 + i + 2,
                    None => return Err(err(self.pos, "unterminated comment")),
                }
            } else {
                return Ok(());
            }
        }
    }

    fn next(&mut self) -> Result<(Tok, usize), ParseError> {
        self.skip_ws()?;
        let start = self.pos;
        let Some(&c) = self.bytes.get(self.pos) else {
            return Ok((Tok::Eof, start));
        };
        let rest = &self.src[self.pos..];
        const SYMS: [&str; 22] = [
            "<=", ">=", "!=", "!~", ".", "[", "]", "(", ")", "{", "}", ",", "|", "+", "-", "*",
            "/", "&", "=", "~", "<", ">",
        ];
        if c.is_ascii_alphabetic() || c == b'_' {
            let end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            self.pos += end;
            return Ok((Tok::Ident(rest[..end].to_string()), start));
        }
        if c.is_ascii_digit() {
            let mut end = rest
                .find(|ch: char| !ch.is_ascii_digit())
                .unwrap_or(rest.len());
            let b = rest.as_bytes();
            if end + 1 < b.len() && b[end] == b'.' && b[end + 1].is_ascii_digit() {
                end += 1;
                end += rest[end..]
                    .find(|ch: char| !ch.is_ascii_digit())
                    .unwrap_or(rest.len() - end);
            } else if end < b.len() && b[end] == b'L' {
                self.pos += end + 1;
                return Ok((Tok::Long(rest[..end].to_string()), start));
            }
            self.pos += end;
            return Ok((Tok::Num(rest[..end].to_string()), start));
        }
        match c {
            b'\'' | b'`' => {
                let s = self.quoted(c as char)?;
                return Ok((
                    if c == b'\'' {
                        Tok::Str(s)
                    } else {
                        Tok::Delim(s)
                    },
                    start,
                ));
            }
            b'@' => {
                self.pos += 1;
                let len = date_len(&self.src[self.pos..]);
                if len == 0 {
                    return Err(err(start, "invalid date/time literal"));
                }
                let text = self.src[self.pos..self.pos + len].to_string();
                self.pos += len;
                return Ok((Tok::Date(text), start));
            }
            b'%' => {
                self.pos += 1;
                let name = match self.bytes.get(self.pos) {
                    Some(b'\'') => self.quoted('\'')?,
                    Some(b'`') => self.quoted('`')?,
                    _ => {
                        let r = &self.src[self.pos..];
                        let end = r
                            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                            .unwrap_or(r.len());
                        if end == 0 {
                            return Err(err(start, "expected a name after '%'"));
                        }
                        self.pos += end;
                        r[..end].to_string()
                    }
                };
                return Ok((Tok::Ext(name), start));
            }
            b'$' => {
                self.pos += 1;
                let r = &self.src[self.pos..];
                let end = r
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .unwrap_or(r.len());
                self.pos += end;
                let name = &r[..end];
                if !matches!(name, "this" | "index" | "total") {
                    return Err(err(start, format!("unknown special variable ${name}")));
                }
                return Ok((Tok::Special(name.to_string()), start));
            }
            _ => {}
        }
        for s in SYMS {
            if rest.starts_with(s) {
                self.pos += s.len();
                return Ok((Tok::Sym(s), start));
            }
        }
        let ch = rest.chars().next().unwrap_or('?');
        Err(err(start, format!("unexpected character '{ch}'")))
    }

    fn quoted(&mut self, q: char) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.src[self.pos..].char_indices();
        while let Some((i, ch)) = chars.next() {
            if ch == q {
                self.pos += i + 1;
                return Ok(out);
            }
            if ch == '\\' {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let mut code = String::new();
                        for _ in 0..4 {
                            match chars.next() {
                                Some((_, h)) if h.is_ascii_hexdigit() => code.push(h),
                                _ => return Err(err(start, "invalid \\u escape")),
                            }
                        }
                        let v = u32::from_str_radix(&code, 16).unwrap_or(0xFFFD);
                        out.push(char::from_u32(v).unwrap_or('\u{FFFD}'));
                    }
                    other => out.push(other),
                }
            } else {
                out.push(ch);
            }
        }
        Err(err(start, "unterminated string"))
    }
}

/// Length of a date/time literal body (after '@').
fn date_len(s: &str) -> usize {
    let b = s.as_bytes();
    let digits =
        |i: usize, n: usize| i + n <= b.len() && b[i..i + n].iter().all(u8::is_ascii_digit);
    let mut i = 0;
    let time = |mut i: usize| -> usize {
        // after 'T'
        if !digits(i, 2) {
            return i;
        }
        i += 2;
        if i < b.len() && b[i] == b':' && digits(i + 1, 2) {
            i += 3;
            if i < b.len() && b[i] == b':' && digits(i + 1, 2) {
                i += 3;
                if i < b.len() && b[i] == b'.' && digits(i + 1, 1) {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
        }
        i
    };
    if b.first() == Some(&b'T') {
        let e = time(1);
        return if e == 1 { 0 } else { e };
    }
    if !digits(0, 4) {
        return 0;
    }
    i += 4;
    if i < b.len() && b[i] == b'-' && digits(i + 1, 2) {
        i += 3;
        if i < b.len() && b[i] == b'-' && digits(i + 1, 2) {
            i += 3;
        }
    }
    if i < b.len() && b[i] == b'T' {
        i = time(i + 1);
        if i < b.len() && b[i] == b'Z' {
            i += 1;
        } else if i < b.len()
            && (b[i] == b'+' || b[i] == b'-')
            && digits(i + 1, 2)
            && b.get(i + 3) == Some(&b':')
            && digits(i + 4, 2)
        {
            i += 6;
        }
    }
    i
}

struct Parser<'s> {
    lexer: Lexer<'s>,
    tok: Tok,
    tok_pos: usize,
    nesting: u32,
}

const P_IMPLIES: u8 = 1;
const P_OR: u8 = 2;
const P_AND: u8 = 3;
const P_MEMBER: u8 = 4;
const P_EQ: u8 = 5;
const P_CMP: u8 = 6;
const P_UNION: u8 = 7;
const P_TYPE: u8 = 8;
const P_ADD: u8 = 9;
const P_MUL: u8 = 10;

pub(crate) fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut lexer = Lexer {
        src,
        bytes: src.as_bytes(),
        pos: 0,
    };
    let (tok, tok_pos) = lexer.next()?;
    let mut p = Parser {
        lexer,
        tok,
        tok_pos,
        nesting: 0,
    };
    if p.tok == Tok::Eof {
        return Err(err(0, "empty expression"));
    }
    let e = p.expr(0)?;
    if p.tok != Tok::Eof {
        return Err(err(p.tok_pos, format!("unexpected {}", describe(&p.tok))));
    }
    Ok(e)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("identifier '{s}'"),
        Tok::Delim(s) => format!("identifier `{s}`"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Num(s) | Tok::Long(s) => format!("number {s}"),
        Tok::Date(s) => format!("date @{s}"),
        Tok::Ext(s) => format!("%{s}"),
        Tok::Special(s) => format!("${s}"),
        Tok::Sym(s) => format!("'{s}'"),
        Tok::Eof => "end of expression".to_string(),
    }
}

impl Parser<'_> {
    fn advance(&mut self) -> Result<(Tok, usize), ParseError> {
        let (t, p) = self.lexer.next()?;
        let old = std::mem::replace(&mut self.tok, t);
        let old_pos = std::mem::replace(&mut self.tok_pos, p);
        Ok((old, old_pos))
    }

    fn expect(&mut self, sym: &'static str) -> Result<(), ParseError> {
        if self.tok == Tok::Sym(sym) {
            self.advance()?;
            Ok(())
        } else {
            Err(err(
                self.tok_pos,
                format!("expected '{sym}' but found {}", describe(&self.tok)),
            ))
        }
    }

    fn check(&self, e: Expr) -> Result<Expr, ParseError> {
        if e.depth > MAX_DEPTH {
            Err(err(
                e.pos,
                format!("expression nested too deeply (max {MAX_DEPTH})"),
            ))
        } else {
            Ok(e)
        }
    }

    fn binop(&self) -> Option<(BinOp, u8)> {
        Some(match &self.tok {
            Tok::Sym(s) => match *s {
                "*" => (BinOp::Mul, P_MUL),
                "/" => (BinOp::Div, P_MUL),
                "+" => (BinOp::Add, P_ADD),
                "-" => (BinOp::Sub, P_ADD),
                "&" => (BinOp::Concat, P_ADD),
                "|" => (BinOp::Union, P_UNION),
                "<" => (BinOp::Lt, P_CMP),
                "<=" => (BinOp::Le, P_CMP),
                ">" => (BinOp::Gt, P_CMP),
                ">=" => (BinOp::Ge, P_CMP),
                "=" => (BinOp::Eq, P_EQ),
                "!=" => (BinOp::Ne, P_EQ),
                "~" => (BinOp::Equiv, P_EQ),
                "!~" => (BinOp::NotEquiv, P_EQ),
                _ => return None,
            },
            Tok::Ident(s) => match s.as_str() {
                "div" => (BinOp::IntDiv, P_MUL),
                "mod" => (BinOp::Mod, P_MUL),
                "in" => (BinOp::In, P_MEMBER),
                "contains" => (BinOp::Contains, P_MEMBER),
                "and" => (BinOp::And, P_AND),
                "or" => (BinOp::Or, P_OR),
                "xor" => (BinOp::Xor, P_OR),
                "implies" => (BinOp::Implies, P_IMPLIES),
                _ => return None,
            },
            _ => return None,
        })
    }

    fn expr(&mut self, min_prec: u8) -> Result<Expr, ParseError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(err(
                self.tok_pos,
                format!("expression nested too deeply (max {MAX_DEPTH})"),
            ));
        }
        let r = stacker::maybe_grow(crate::eval::STACK_RED_ZONE, crate::eval::STACK_GROW, || {
            self.expr_inner(min_prec)
        });
        self.nesting -= 1;
        r
    }

    fn expr_inner(&mut self, min_prec: u8) -> Result<Expr, ParseError> {
        let mut lhs = self.unary()?;
        loop {
            if let Tok::Ident(s) = &self.tok
                && (s == "is" || s == "as")
                && P_TYPE >= min_prec
            {
                let is = s == "is";
                let (_, pos) = self.advance()?;
                let ty = self.type_spec()?;
                let kind = if is {
                    ExprKind::Is(Box::new(lhs), ty)
                } else {
                    ExprKind::As(Box::new(lhs), ty)
                };
                let depth = match &kind {
                    ExprKind::Is(e, _) | ExprKind::As(e, _) => e.depth + 1,
                    _ => 1,
                };
                lhs = self.check(Expr { kind, pos, depth })?;
                continue;
            }
            let Some((op, prec)) = self.binop() else {
                break;
            };
            if prec < min_prec {
                break;
            }
            let (_, pos) = self.advance()?;
            let rhs = self.expr(prec + 1)?;
            let depth = 1 + lhs.depth.max(rhs.depth);
            lhs = self.check(Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                pos,
                depth,
            })?;
        }
        Ok(lhs)
    }

    fn type_spec(&mut self) -> Result<String, ParseError> {
        let mut name = self.ident_like()?;
        while self.tok == Tok::Sym(".") {
            self.advance()?;
            let part = self.ident_like()?;
            name.push('.');
            name.push_str(&part);
        }
        Ok(name)
    }

    fn ident_like(&mut self) -> Result<String, ParseError> {
        match &self.tok {
            Tok::Ident(s) | Tok::Delim(s) => {
                let s = s.clone();
                self.advance()?;
                Ok(s)
            }
            t => Err(err(
                self.tok_pos,
                format!("expected a type name but found {}", describe(t)),
            )),
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if let Tok::Sym(s @ ("-" | "+")) = self.tok {
            let (_, pos) = self.advance()?;
            self.nesting += 1;
            if self.nesting > MAX_DEPTH {
                return Err(err(
                    pos,
                    format!("expression nested too deeply (max {MAX_DEPTH})"),
                ));
            }
            let operand = self.unary();
            self.nesting -= 1;
            let operand = operand?;
            if s == "+" {
                return Ok(operand);
            }
            // fold negative numeric literals
            let folded = match &operand.kind {
                ExprKind::Lit(Lit::Int(i)) => Some(Lit::Int(-*i)),
                ExprKind::Lit(Lit::Dec(d)) => Some(Lit::Dec(-*d)),
                ExprKind::Lit(Lit::Quantity(d, u)) => Some(Lit::Quantity(-*d, u.clone())),
                _ => None,
            };
            if let Some(l) = folded {
                return Ok(Expr {
                    kind: ExprKind::Lit(l),
                    pos,
                    depth: 1,
                });
            }
            let depth = operand.depth + 1;
            return self.check(Expr {
                kind: ExprKind::Neg(Box::new(operand)),
                pos,
                depth,
            });
        }
        let t = self.term()?;
        self.postfix(t)
    }

    fn postfix(&mut self, mut e: Expr) -> Result<Expr, ParseError> {
        loop {
            match self.tok {
                Tok::Sym(".") => {
                    self.advance()?;
                    let (tok, pos) = self.advance()?;
                    let name = match tok {
                        Tok::Ident(s) | Tok::Delim(s) => s,
                        t => {
                            return Err(err(
                                pos,
                                format!("expected a name after '.' but found {}", describe(&t)),
                            ));
                        }
                    };
                    let depth = e.depth + 1;
                    if self.tok == Tok::Sym("(") {
                        let args = self.args(&name, pos)?;
                        let depth = depth.max(1 + args.iter().map(|a| a.depth).max().unwrap_or(0));
                        e = self.check(Expr {
                            kind: ExprKind::Call(Some(Box::new(e)), name, args),
                            pos,
                            depth,
                        })?;
                    } else {
                        e = self.check(Expr {
                            kind: ExprKind::Member(Some(Box::new(e)), name),
                            pos,
                            depth,
                        })?;
                    }
                }
                Tok::Sym("[") => {
                    let (_, pos) = self.advance()?;
                    let idx = self.expr(0)?;
                    self.expect("]")?;
                    let depth = 1 + e.depth.max(idx.depth);
                    e = self.check(Expr {
                        kind: ExprKind::Indexer(Box::new(e), Box::new(idx)),
                        pos,
                        depth,
                    })?;
                }
                _ => return Ok(e),
            }
        }
    }

    fn args(&mut self, name: &str, pos: usize) -> Result<Vec<Expr>, ParseError> {
        self.expect("(")?;
        let mut args = Vec::new();
        if self.tok != Tok::Sym(")") {
            loop {
                args.push(self.expr(0)?);
                if self.tok == Tok::Sym(",") {
                    self.advance()?;
                } else {
                    break;
                }
            }
        }
        self.expect(")")?;
        crate::eval::check_function(name, args.len()).map_err(|m| err(pos, m))?;
        Ok(args)
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let (tok, pos) = self.advance()?;
        let lit = |l: Lit| {
            Ok(Expr {
                kind: ExprKind::Lit(l),
                pos,
                depth: 1,
            })
        };
        match tok {
            Tok::Num(n) => {
                // a quantity?
                let unit = match &self.tok {
                    Tok::Str(u) => Some(u.clone()),
                    Tok::Ident(u) if crate::quantity::is_calendar_unit(u) => Some(u.clone()),
                    _ => None,
                };
                let value = if n.contains('.') {
                    Decimal::from_str(&n).map_err(|_| err(pos, "number out of range"))?
                } else {
                    match n.parse::<i64>() {
                        Ok(i) if unit.is_none() => return lit(Lit::Int(i)),
                        _ => Decimal::from_str(&n).map_err(|_| err(pos, "number out of range"))?,
                    }
                };
                match unit {
                    Some(u) => {
                        self.advance()?;
                        lit(Lit::Quantity(value, u))
                    }
                    None => lit(Lit::Dec(value)),
                }
            }
            Tok::Long(n) => lit(Lit::Int(
                n.parse::<i64>()
                    .map_err(|_| err(pos, "number out of range"))?,
            )),
            Tok::Str(s) => lit(Lit::Str(s)),
            Tok::Date(d) => {
                let t = Temporal::parse_literal(&d)
                    .ok_or_else(|| err(pos, format!("invalid date/time @{d}")))?;
                lit(match t.kind {
                    crate::temporal::TKind::Date => Lit::Date(t),
                    crate::temporal::TKind::DateTime => Lit::DateTime(t),
                    crate::temporal::TKind::Time => Lit::Time(t),
                })
            }
            Tok::Ext(name) => Ok(Expr {
                kind: ExprKind::Var(name),
                pos,
                depth: 1,
            }),
            Tok::Special(s) => Ok(Expr {
                kind: match s.as_str() {
                    "this" => ExprKind::This,
                    "index" => ExprKind::Index,
                    _ => ExprKind::Total,
                },
                pos,
                depth: 1,
            }),
            Tok::Sym("(") => {
                let e = self.expr(0)?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Sym("{") => {
                self.expect("}")?;
                lit(Lit::Empty)
            }
            Tok::Ident(s) if s == "true" => lit(Lit::Bool(true)),
            Tok::Ident(s) if s == "false" => lit(Lit::Bool(false)),
            Tok::Ident(s) | Tok::Delim(s) => {
                if self.tok == Tok::Sym("(") {
                    let args = self.args(&s, pos)?;
                    let depth = 1 + args.iter().map(|a| a.depth).max().unwrap_or(0);
                    self.check(Expr {
                        kind: ExprKind::Call(None, s, args),
                        pos,
                        depth,
                    })
                } else {
                    Ok(Expr {
                        kind: ExprKind::Member(None, s),
                        pos,
                        depth: 1,
                    })
                }
            }
            t => Err(err(pos, format!("unexpected {}", describe(&t)))),
        }
    }
}
