//! The name patterns of policy rules: `*` for any run of characters, `?`
//! for exactly one, `\` to take the next character literally; `[`, `]`,
//! `{` and `}` are reserved. A pattern matches the whole name.
//!
//! It compiles and matches patterns; which rule a pattern belongs to and
//! what a match decides is `policy/mod.rs`'s business.

/// One element of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// This character.
    Char(char),
    /// Any one character (`?`).
    One,
    /// Any run of characters (`*`).
    Run,
}

/// A compiled name pattern (see the module documentation for the syntax).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles a pattern; the error says what is wrong with it.
    pub fn new(source: &str) -> Result<Pattern, String> {
        if source.is_empty() {
            return Err("it is empty (use \"*\" for every name)".into());
        }
        if let Some(c) = source.chars().find(|c| c.is_control()) {
            return Err(format!(
                "it contains the control character {c:?}, which no name may contain"
            ));
        }
        let mut tokens = Vec::new();
        let mut chars = source.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => {
                    if tokens.last() == Some(&Token::Run) {
                        continue;
                    }
                    Token::Run
                }
                '?' => Token::One,
                '\\' => match chars.next() {
                    Some(next) => Token::Char(next),
                    None => return Err("it ends with a lone \\".into()),
                },
                '[' | ']' | '{' | '}' => {
                    return Err(format!(
                        "{c:?} is reserved; write \\{c} to match it literally"
                    ));
                }
                c => Token::Char(c),
            });
        }
        Ok(Pattern {
            source: source.to_string(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern is `*` (or `**`...): every name, the empty one
    /// included.
    pub fn matches_everything(&self) -> bool {
        self.tokens == [Token::Run]
    }

    /// Whether the whole of `name` matches. Allocates nothing, and is
    /// linear in practice: only the last `*` is ever backtracked to (names
    /// are at most 255 bytes).
    pub fn matches(&self, name: &str) -> bool {
        let p = &self.tokens;
        let next_char = |at: usize| name.get(at..).and_then(|rest| rest.chars().next());
        // Token index, and byte offset into `name`.
        let (mut pi, mut ni) = (0, 0);
        // Where to resume after the last `*`: (token after it, byte offset).
        let mut star: Option<(usize, usize)> = None;
        while let Some(c) = next_char(ni) {
            match p.get(pi) {
                Some(Token::Run) => {
                    star = Some((pi + 1, ni));
                    pi += 1;
                }
                Some(Token::One) => {
                    pi += 1;
                    ni += c.len_utf8();
                }
                Some(Token::Char(t)) if *t == c => {
                    pi += 1;
                    ni += c.len_utf8();
                }
                _ => match star {
                    // Let the last `*` swallow one more character.
                    Some((after, from)) => {
                        let skipped = next_char(from).map_or(1, char::len_utf8);
                        pi = after;
                        ni = from + skipped;
                        star = Some((after, ni));
                    }
                    None => return false,
                },
            }
        }
        p.get(pi..)
            .is_some_and(|rest| rest.iter().all(|t| *t == Token::Run))
    }
}
