//! Which argument of an `exec` command is code for an interpreter: a placeholder there would
//! let a process name (chosen by whoever runs the process) become shell code run by root.

/// Programs that run the next program of their argv (after their own options): the
/// interpreter is looked for behind them.
const WRAPPERS: [&str; 12] = [
    "env", "nice", "nohup", "setsid", "timeout", "ionice", "stdbuf", "chrt", "sudo", "doas",
    "flock", "busybox",
];

/// Shells whose `-c` takes a script.
const SHELLS: [&str; 12] = [
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "fish", "csh", "tcsh", "rbash",
];

/// Interpreters whose `-c`/`-e`/… takes a program text.
const INTERPRETERS: [(&str, &[&str]); 6] = [
    ("python", &["-c"]),
    ("perl", &["-e", "-E"]),
    ("ruby", &["-e"]),
    ("node", &["-e", "-p", "--eval", "--print"]),
    ("php", &["-r"]),
    ("lua", &["-e"]),
];

/// The index in `argv` of an argument that an interpreter runs as code (the script of
/// `sh -c SCRIPT`, `env -i bash -c SCRIPT`, `python3 -c CODE`, `env -S "…"`), or `None`.
pub fn code_argument(argv: &[String]) -> Option<usize> {
    let mut i = 0;
    while i < argv.len() {
        let name = basename(&argv[i]);
        if name == "env" {
            i += 1;
            while let Some(arg) = argv.get(i) {
                if arg == "-S" || arg.starts_with("--split-string") || arg.starts_with("-S") {
                    // `env -S "sh -c …"` splits a string into a command line: all code.
                    return Some(if arg == "-S" { i + 1 } else { i });
                }
                if arg == "-u" || arg == "--unset" || arg == "-C" || arg == "--chdir" {
                    i += 2;
                } else if arg.starts_with('-') || arg.contains('=') {
                    i += 1;
                } else {
                    break;
                }
            }
            continue;
        }
        if WRAPPERS.contains(&name) {
            i += 1;
            // Their own options and option values (`timeout 5`, `nice -n 5`, `flock FILE`):
            // skip everything up to the first argument that names a known interpreter.
            while let Some(arg) = argv.get(i) {
                let n = basename(arg);
                if SHELLS.contains(&n) || interpreter(n).is_some() || WRAPPERS.contains(&n) {
                    break;
                }
                if n == "su" || n == "runuser" {
                    break;
                }
                i += 1;
            }
            continue;
        }
        if name == "su" || name == "runuser" {
            // `su USER -c CMD`: the user may come before the flag.
            let flag = argv[i + 1..]
                .iter()
                .position(|a| a == "-c" || a == "--command")?;
            return Some(i + 1 + flag + 1).filter(|&n| n < argv.len());
        }
        if SHELLS.contains(&name) {
            return flag_value(argv, i + 1, &["-c"], true);
        }
        if let Some(flags) = interpreter(name) {
            return flag_value(argv, i + 1, flags, false);
        }
        return None;
    }
    None
}

/// The interpreter flags of `name` (`python3.11` is a python).
fn interpreter(name: &str) -> Option<&'static [&'static str]> {
    INTERPRETERS.iter().find_map(|(prefix, flags)| {
        let rest = name.strip_prefix(prefix)?;
        rest.bytes()
            .all(|b| b.is_ascii_digit() || b == b'.')
            .then_some(*flags)
    })
}

/// After `start`, the argument a code flag takes: `-c SCRIPT`, or for shells a cluster
/// such as `-ec SCRIPT` (the first operand after the options is the script).
fn flag_value(argv: &[String], start: usize, flags: &[&str], shell: bool) -> Option<usize> {
    let mut code_flag = false;
    let mut i = start;
    while let Some(arg) = argv.get(i) {
        if arg == "--" {
            return code_flag.then_some(i + 1).filter(|&n| n < argv.len());
        }
        let joined = |f: &&str| arg.strip_prefix(*f).is_some_and(|v| v.starts_with('='));
        if flags.iter().any(joined) {
            return Some(i); // `--eval=CODE`
        }
        if flags.contains(&arg.as_str()) {
            if !shell {
                return (i + 1 < argv.len()).then_some(i + 1);
            }
            code_flag = true;
        } else if shell && arg.starts_with('-') && arg.len() > 1 && !arg.starts_with("--") {
            if arg[1..].contains('c') {
                code_flag = true;
            }
        } else if shell && arg.starts_with('+') {
            // `set +e`-style options.
        } else if arg.starts_with('-') {
            // Another option of the interpreter.
        } else {
            return code_flag.then_some(i);
        }
        i += 1;
    }
    None
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn finds_the_code_argument_of_shells_and_interpreters() {
        for (words, want) in [
            (&["/bin/sh", "-c", "logger {comm}"][..], Some(2)),
            (&["/bin/bash", "-ec", "logger {comm}"], Some(2)),
            (&["/bin/sh", "-e", "-c", "x", "sh", "{comm}"], Some(3)),
            (&["/usr/bin/env", "sh", "-c", "x"], Some(3)),
            (
                &["/usr/bin/env", "-i", "FOO=1", "/bin/dash", "-c", "x"],
                Some(5),
            ),
            (&["/usr/bin/env", "-S", "sh -c x"], Some(2)),
            (&["/usr/bin/env", "-u", "HOME", "bash", "-c", "x"], Some(5)),
            (&["/usr/bin/timeout", "5", "/bin/sh", "-c", "x"], Some(4)),
            (&["/usr/bin/nice", "-n", "5", "sh", "-c", "x"], Some(5)),
            (&["/usr/bin/python3", "-c", "print(1)"], Some(2)),
            (&["/usr/bin/python3.11", "-u", "-c", "x"], Some(3)),
            (&["/usr/bin/perl", "-e", "x"], Some(2)),
            (&["/usr/bin/node", "--eval=x"], Some(1)),
            (&["/bin/su", "nobody", "-c", "x"], Some(3)),
            (&["/bin/busybox", "sh", "-c", "x"], Some(3)),
            // Not code: a plain program, a script file, positional parameters.
            (&["/usr/bin/logger", "-t", "sockwarden", "{comm}"], None),
            (&["/bin/sh", "/usr/local/bin/notify.sh", "{comm}"], None),
            (&["/usr/bin/python3", "/opt/notify.py", "{comm}"], None),
            (&["/usr/bin/env", "/usr/local/bin/notify", "{comm}"], None),
            (&["/bin/sh", "-c"], None),
        ] {
            assert_eq!(code_argument(&argv(words)), want, "{words:?}");
        }
    }
}
