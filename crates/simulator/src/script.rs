//! What a simulated container's command prints, and when: a small, side-effect-free interpreter
//! for the shell one-liners that pods in tutorials and test suites run (`echo`, `printf`,
//! `sleep`, `for i in $(seq 1 5)`, `while true`, `if [ $i -lt 7 ]`, `>&2`, `exit N`, variables).
//! Nothing runs: the script becomes a timeline of output lines, a run time and an exit code, so
//! a simulated container's log and attach show what the real one would have written. A command
//! using anything else is not simulated (the caller falls back to its synthetic log).

use std::collections::HashMap;
use std::time::Duration;

/// One line of output, `at` after the container started.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub at: Duration,
    pub stderr: bool,
    pub text: String,
}

/// What a command does when it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Script {
    pub lines: Vec<Line>,
    /// When it ends (None: never, e.g. `while true` or `sleep infinity`).
    pub ends: Option<Duration>,
    pub exit_code: i64,
}

/// Longest timeline kept for a script that never ends.
const HORIZON: Duration = Duration::from_secs(24 * 3600);
/// Most lines kept.
const MAX_LINES: usize = 10_000;

/// The timeline of `command` (a container's command and arguments), if it is simple enough.
pub fn run(command: &[String]) -> Option<Script> {
    let program = command.first()?.rsplit('/').next()?;
    let source = match program {
        "sh" | "bash" | "ash" | "dash" if command.get(1).map(String::as_str) == Some("-c") => command.get(2)?.clone(),
        "sh" | "bash" | "ash" | "dash" => return None,
        _ => command.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "),
    };
    let tokens = tokenize(&source)?;
    let mut parser = Parser { tokens, at: 0 };
    let body = parser.list(&[])?;
    if parser.at != parser.tokens.len() {
        return None;
    }
    let mut machine = Machine::default();
    let flow = machine.block(&body)?;
    let exit_code = match flow {
        Flow::Exit(code) => code,
        _ => machine.status,
    };
    let ends = if machine.forever { None } else { Some(machine.time) };
    Some(Script { lines: machine.lines, ends, exit_code })
}

fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Literal(String),
    /// `$name` / `${name}` (inside double quotes or not).
    Var(String),
    /// `$(...)` or `` `...` ``.
    Command(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(Vec<Part>),
    /// `;`, newline, `&&`, `||` (all run the next command; `||` is approximated by status).
    Separator(&'static str),
    /// `>&2`, `1>&2`: the command writes to stderr.
    ToStderr,
    /// `2>&1`, `>/dev/null` and other redirections: ignored, or give up.
    Ignored,
}

fn tokenize(source: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut parts: Vec<Part> = Vec::new();
    let mut literal = String::new();
    let mut in_word = false;
    let mut i = 0;
    let flush = |parts: &mut Vec<Part>, literal: &mut String| {
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(literal)));
        }
    };
    macro_rules! end_word {
        () => {
            if in_word {
                flush(&mut parts, &mut literal);
                tokens.push(Token::Word(std::mem::take(&mut parts)));
                in_word = false;
            }
        };
    }
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => {
                end_word!();
                i += 1;
            }
            '\n' | ';' => {
                end_word!();
                tokens.push(Token::Separator(";"));
                i += 1;
            }
            '#' if !in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '&' if chars.get(i + 1) == Some(&'&') => {
                end_word!();
                tokens.push(Token::Separator("&&"));
                i += 2;
            }
            '|' if chars.get(i + 1) == Some(&'|') => {
                end_word!();
                tokens.push(Token::Separator("||"));
                i += 2;
            }
            '&' | '|' | '<' | '(' | ')' => return None,
            '>' => {
                let descriptor = if in_word && parts.is_empty() && (literal == "1" || literal == "2") {
                    let d = literal.clone();
                    literal.clear();
                    in_word = false;
                    Some(d)
                } else {
                    end_word!();
                    None
                };
                let rest: String = chars[i..].iter().collect();
                if rest.starts_with(">&2") {
                    tokens.push(if descriptor.as_deref() == Some("2") { Token::Ignored } else { Token::ToStderr });
                    i += 3;
                } else if rest.starts_with(">&1") {
                    tokens.push(Token::Ignored);
                    i += 3;
                } else if rest.starts_with(">/dev/null") || rest.starts_with("> /dev/null") {
                    // Output thrown away: give up rather than print it.
                    return None;
                } else {
                    return None;
                }
            }
            '\'' => {
                in_word = true;
                let end = chars[i + 1..].iter().position(|c| *c == '\'')? + i + 1;
                literal.extend(&chars[i + 1..end]);
                i = end + 1;
            }
            '"' => {
                in_word = true;
                i += 1;
                loop {
                    let c = *chars.get(i)?;
                    match c {
                        '"' => {
                            i += 1;
                            break;
                        }
                        '\\' if matches!(chars.get(i + 1), Some('"' | '\\' | '$' | '`')) => {
                            literal.push(chars[i + 1]);
                            i += 2;
                        }
                        '$' | '`' => {
                            flush(&mut parts, &mut literal);
                            let (part, next) = dollar(&chars, i)?;
                            parts.push(part);
                            i = next;
                        }
                        _ => {
                            literal.push(c);
                            i += 1;
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(next) = chars.get(i + 1)
                    && *next != '\n'
                {
                    literal.push(*next);
                }
                i += 2;
            }
            '$' | '`' => {
                in_word = true;
                flush(&mut parts, &mut literal);
                let (part, next) = dollar(&chars, i)?;
                parts.push(part);
                i = next;
            }
            _ => {
                in_word = true;
                literal.push(c);
                i += 1;
            }
        }
    }
    if in_word {
        flush(&mut parts, &mut literal);
        tokens.push(Token::Word(parts));
    }
    Some(tokens)
}

/// A `$...` or backquote expansion starting at `i`: the part and where it ends.
fn dollar(chars: &[char], i: usize) -> Option<(Part, usize)> {
    if chars[i] == '`' {
        let end = chars[i + 1..].iter().position(|c| *c == '`')? + i + 1;
        return Some((Part::Command(chars[i + 1..end].iter().collect()), end + 1));
    }
    match chars.get(i + 1) {
        Some('(') => {
            let mut depth = 0;
            for (j, c) in chars.iter().enumerate().skip(i + 1) {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some((Part::Command(chars[i + 2..j].iter().collect()), j + 1));
                        }
                    }
                    _ => {}
                }
            }
            None
        }
        Some('{') => {
            let end = chars[i + 2..].iter().position(|c| *c == '}')? + i + 2;
            let name: String = chars[i + 2..end].iter().collect();
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_').then_some((Part::Var(name), end + 1))
        }
        Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
            let end = chars[i + 1..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
                .map_or(chars.len(), |p| p + i + 1);
            Some((Part::Var(chars[i + 1..end].iter().collect()), end))
        }
        Some('?') => Some((Part::Var("?".into()), i + 2)),
        _ => Some((Part::Literal("$".into()), i + 1)),
    }
}

#[derive(Clone, Debug)]
enum Node {
    Simple { words: Vec<Vec<Part>>, stderr: bool },
    For { var: String, items: Vec<Vec<Part>>, body: Vec<Node> },
    While { body: Vec<Node> },
    If { branches: Vec<(Vec<Node>, Vec<Node>)>, otherwise: Vec<Node> },
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

fn literal(word: &[Part]) -> Option<&str> {
    match word {
        [Part::Literal(text)] => Some(text),
        _ => None,
    }
}

impl Parser {
    fn peek_keyword(&self) -> Option<&str> {
        match self.tokens.get(self.at) {
            Some(Token::Word(word)) => literal(word),
            _ => None,
        }
    }

    fn expect(&mut self, keyword: &str) -> Option<()> {
        (self.peek_keyword()? == keyword).then(|| self.at += 1)
    }

    fn skip_separators(&mut self) {
        while matches!(self.tokens.get(self.at), Some(Token::Separator(_))) {
            self.at += 1;
        }
    }

    /// Commands until one of `ends` (a keyword) or the end.
    fn list(&mut self, ends: &[&str]) -> Option<Vec<Node>> {
        let mut nodes = Vec::new();
        loop {
            self.skip_separators();
            if self.at >= self.tokens.len() {
                return ends.is_empty().then_some(nodes);
            }
            if self.peek_keyword().is_some_and(|k| ends.contains(&k)) {
                return Some(nodes);
            }
            nodes.push(self.command()?);
        }
    }

    fn command(&mut self) -> Option<Node> {
        match self.peek_keyword() {
            Some("for") => {
                self.at += 1;
                let Some(Token::Word(var)) = self.tokens.get(self.at).cloned() else { return None };
                let var = literal(&var)?.to_string();
                self.at += 1;
                self.expect("in")?;
                let mut items = Vec::new();
                while let Some(Token::Word(word)) = self.tokens.get(self.at).cloned() {
                    self.at += 1;
                    items.push(word);
                }
                self.skip_separators();
                self.expect("do")?;
                let body = self.list(&["done"])?;
                self.expect("done")?;
                Some(Node::For { var, items, body })
            }
            Some("while") => {
                self.at += 1;
                let condition = self.peek_keyword()?;
                if condition != "true" && condition != ":" {
                    return None;
                }
                self.at += 1;
                self.skip_separators();
                self.expect("do")?;
                let body = self.list(&["done"])?;
                self.expect("done")?;
                Some(Node::While { body })
            }
            Some("if") => {
                self.at += 1;
                let mut branches = Vec::new();
                let mut otherwise = Vec::new();
                loop {
                    let condition = self.list(&["then"])?;
                    self.expect("then")?;
                    let body = self.list(&["elif", "else", "fi"])?;
                    branches.push((condition, body));
                    match self.peek_keyword()? {
                        "elif" => self.at += 1,
                        "else" => {
                            self.at += 1;
                            otherwise = self.list(&["fi"])?;
                            self.expect("fi")?;
                            break;
                        }
                        _ => {
                            self.expect("fi")?;
                            break;
                        }
                    }
                }
                Some(Node::If { branches, otherwise })
            }
            Some("do" | "done" | "then" | "else" | "elif" | "fi" | "in") => None,
            _ => {
                let mut words = Vec::new();
                let mut stderr = false;
                while let Some(token) = self.tokens.get(self.at) {
                    match token {
                        Token::Word(word) => words.push(word.clone()),
                        Token::ToStderr => stderr = true,
                        Token::Ignored => {}
                        Token::Separator(_) => break,
                    }
                    self.at += 1;
                }
                Some(Node::Simple { words, stderr })
            }
        }
    }
}

enum Flow {
    Next,
    Exit(i64),
}

#[derive(Default)]
struct Machine {
    vars: HashMap<String, String>,
    time: Duration,
    lines: Vec<Line>,
    status: i64,
    forever: bool,
}

impl Machine {
    fn full(&self) -> bool {
        self.forever || self.lines.len() >= MAX_LINES || self.time >= HORIZON
    }

    fn expand(&self, word: &[Part]) -> Option<String> {
        let mut out = String::new();
        for part in word {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(name) if name == "?" => out.push_str(&self.status.to_string()),
                Part::Var(name) => out.push_str(self.vars.get(name).map(String::as_str).unwrap_or_default()),
                Part::Command(command) => out.push_str(&substitute(command)?),
            }
        }
        Some(out)
    }

    fn block(&mut self, nodes: &[Node]) -> Option<Flow> {
        for node in nodes {
            if self.full() {
                return Some(Flow::Next);
            }
            if let Flow::Exit(code) = self.node(node)? {
                return Some(Flow::Exit(code));
            }
        }
        Some(Flow::Next)
    }

    fn node(&mut self, node: &Node) -> Option<Flow> {
        match node {
            Node::Simple { words, stderr } => self.simple(words, *stderr),
            Node::For { var, items, body } => {
                let mut values = Vec::new();
                for item in items {
                    let expanded = self.expand(item)?;
                    // Unquoted expansions split at whitespace (`$(seq 1 5)`).
                    if item.iter().any(|p| !matches!(p, Part::Literal(_))) {
                        values.extend(expanded.split_whitespace().map(String::from));
                    } else {
                        values.push(expanded);
                    }
                }
                for value in values {
                    self.vars.insert(var.clone(), value);
                    if let Flow::Exit(code) = self.block(body)? {
                        return Some(Flow::Exit(code));
                    }
                }
                Some(Flow::Next)
            }
            Node::While { body } => {
                let mut previous = (self.time, self.lines.len());
                loop {
                    if let Flow::Exit(code) = self.block(body)? {
                        return Some(Flow::Exit(code));
                    }
                    if self.full() {
                        self.forever = true;
                        return Some(Flow::Next);
                    }
                    // A loop that neither waits nor prints would spin forever.
                    if (self.time, self.lines.len()) == previous {
                        return None;
                    }
                    previous = (self.time, self.lines.len());
                }
            }
            Node::If { branches, otherwise } => {
                for (condition, body) in branches {
                    self.block(condition)?;
                    if self.status == 0 {
                        return self.block(body);
                    }
                }
                self.block(otherwise)
            }
        }
    }

    fn print(&mut self, text: &str, stderr: bool) {
        for line in text.split('\n') {
            self.lines.push(Line { at: self.time, stderr, text: line.to_string() });
        }
    }

    fn simple(&mut self, words: &[Vec<Part>], stderr: bool) -> Option<Flow> {
        let mut args = Vec::new();
        for word in words {
            args.push(self.expand(word)?);
        }
        let Some(program) = args.first().cloned() else { return Some(Flow::Next) };
        if let Some((name, value)) = program.split_once('=')
            && args.len() == 1
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.vars.insert(name.to_string(), value.to_string());
            return Some(Flow::Next);
        }
        let rest = &args[1..];
        self.status = 0;
        match program.rsplit('/').next().unwrap_or_default() {
            "echo" => {
                let (newline, rest) = match rest.first().map(String::as_str) {
                    Some("-n") => (false, &rest[1..]),
                    Some("-e") => (true, &rest[1..]),
                    _ => (true, rest),
                };
                let text = rest.join(" ");
                if newline || !text.is_empty() {
                    self.print(&text, stderr);
                }
            }
            "printf" => {
                let format = rest.first()?;
                let mut values = rest[1..].iter();
                let mut text = String::new();
                let mut chars = format.chars().peekable();
                while let Some(c) = chars.next() {
                    match (c, chars.peek()) {
                        ('\\', Some('n')) => {
                            chars.next();
                            text.push('\n');
                        }
                        ('\\', Some('t')) => {
                            chars.next();
                            text.push('\t');
                        }
                        ('%', Some('s' | 'd')) => {
                            chars.next();
                            text.push_str(values.next().map(String::as_str).unwrap_or_default());
                        }
                        ('%', Some('%')) => {
                            chars.next();
                            text.push('%');
                        }
                        _ => text.push(c),
                    }
                }
                if let Some(complete) = text.strip_suffix('\n') {
                    self.print(complete, stderr);
                } else if !text.is_empty() {
                    self.print(&text, stderr);
                }
            }
            "sleep" => match rest.first().map(String::as_str) {
                Some("infinity" | "inf") => self.forever = true,
                Some(seconds) => {
                    let seconds: f64 = seconds.trim_end_matches('s').parse().ok()?;
                    self.time += Duration::from_secs_f64(seconds.max(0.0));
                }
                None => return None,
            },
            "true" | ":" => {}
            "false" => self.status = 1,
            "exit" => return Some(Flow::Exit(rest.first().map_or(Some(self.status), |c| c.parse().ok())?)),
            "[" | "test" => {
                let mut operands: Vec<&str> = rest.iter().map(String::as_str).collect();
                if program == "[" {
                    if operands.last() != Some(&"]") {
                        return None;
                    }
                    operands.pop();
                }
                self.status = i64::from(!test(&operands)?);
            }
            _ => return None,
        }
        Some(Flow::Next)
    }
}

/// The output of a command substitution the interpreter knows: `seq`, `echo`.
fn substitute(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["seq", last] => seq(1, 1, last.parse().ok()?),
        ["seq", first, last] => seq(first.parse().ok()?, 1, last.parse().ok()?),
        ["seq", first, step, last] => seq(first.parse().ok()?, step.parse().ok()?, last.parse().ok()?),
        ["echo", rest @ ..] => Some(rest.join(" ")),
        _ => None,
    }
}

fn seq(first: i64, step: i64, last: i64) -> Option<String> {
    if step == 0 || (last - first) / step > MAX_LINES as i64 {
        return None;
    }
    let mut out = Vec::new();
    let mut i = first;
    while (step > 0 && i <= last) || (step < 0 && i >= last) {
        out.push(i.to_string());
        i += step;
    }
    Some(out.join("\n"))
}

/// `test`'s answer for the forms scripts use.
fn test(operands: &[&str]) -> Option<bool> {
    let number = |s: &str| s.parse::<i64>().ok();
    Some(match operands {
        [] => false,
        ["!", rest @ ..] => !test(rest)?,
        [value] => !value.is_empty(),
        ["-n", value] => !value.is_empty(),
        ["-z", value] => value.is_empty(),
        [a, "=" | "==", b] => a == b,
        [a, "!=", b] => a != b,
        [a, op, b] => {
            let (a, b) = (number(a)?, number(b)?);
            match *op {
                "-lt" => a < b,
                "-le" => a <= b,
                "-gt" => a > b,
                "-ge" => a >= b,
                "-eq" => a == b,
                "-ne" => a != b,
                _ => return None,
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Option<Script> {
        run(&["sh".into(), "-c".into(), script.into()])
    }

    fn texts(script: &Script) -> Vec<(u128, bool, &str)> {
        script.lines.iter().map(|l| (l.at.as_millis(), l.stderr, l.text.as_str())).collect()
    }

    #[test]
    fn loops_sleeps_and_echoes_become_a_timeline() {
        let script = sh("for i in $(seq 1 3); do echo kube $i; sleep 0.1; done").unwrap();
        assert_eq!(texts(&script), [(0, false, "kube 1"), (100, false, "kube 2"), (200, false, "kube 3")]);
        assert_eq!((script.ends, script.exit_code), (Some(Duration::from_millis(300)), 0));
    }

    #[test]
    fn conditions_redirections_and_quotes() {
        let script =
            sh("for i in `seq 3`; do if [ $i -lt 2 ]; then echo \"o $i\"; else echo \"e $i\" 1>&2; fi; sleep 1; done;")
                .unwrap();
        assert_eq!(texts(&script), [(0, false, "o 1"), (1000, true, "e 2"), (2000, true, "e 3")]);
        let script = sh("NAME=world; echo 'hello '\"$NAME\"; printf '%s-%s\\n' a b; exit 3").unwrap();
        assert_eq!(texts(&script), [(0, false, "hello world"), (0, false, "a-b")]);
        assert_eq!(script.exit_code, 3);
    }

    #[test]
    fn endless_loops_end_never_and_unknown_commands_are_not_simulated() {
        let script = sh("while true; do echo tick; sleep 10; done").unwrap();
        assert_eq!(script.ends, None);
        assert_eq!(script.lines[1].at, Duration::from_secs(10));
        assert_eq!(sh("echo start; sleep infinity").unwrap().ends, None);
        assert!(sh("curl http://example.com").is_none());
        assert!(sh("echo hi > /dev/null").is_none());
        assert!(sh("while true; do :; done").is_none(), "a busy loop");
        assert_eq!(run(&["echo".into(), "a b".into()]).unwrap().lines[0].text, "a b");
        assert!(run(&["nginx".into()]).is_none());
    }
}
