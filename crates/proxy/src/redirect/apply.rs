//! Installing and removing Ferry's rules in the current network namespace: picks the iptables
//! backend, reads the current rules with `*-save`, and feeds one atomic `*-restore --noflush`
//! per IP family. Commands run behind the [`System`] trait so the logic is testable without root.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use super::backend::{self, Backend, BackendChoice, Probe};
use super::rules::{RulesError, nat_rules};
use super::script::{cleanup_script, install_script};
use super::settings::{CaptureSettings, Family};

/// What a finished command printed and how it exited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// The exit status as text (`exit status: 2`), for messages.
    pub status: String,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// The operating-system side of applying rules: running commands and reading IPv6 state.
pub trait System {
    /// Runs `program` with `args`, writing `stdin` to it; `Ok(None)` if it is not installed.
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> io::Result<Option<CommandOutput>>;

    /// Why IPv6 cannot be used in this network namespace, or `None` when it can.
    fn ipv6_unavailable(&self) -> Option<String>;
}

/// The real system: commands from `PATH`, IPv6 state from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostSystem;

impl System for HostSystem {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> io::Result<Option<CommandOutput>> {
        let child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A command that exits early closes the pipe; its status and stderr say why.
            let _ = pipe.write_all(input.as_bytes());
        }
        let output = child.wait_with_output()?;
        Ok(Some(CommandOutput {
            success: output.status.success(),
            status: output.status.to_string(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }))
    }

    fn ipv6_unavailable(&self) -> Option<String> {
        if std::fs::metadata("/proc/net/if_inet6").is_err() {
            return Some("the kernel has no IPv6 support".into());
        }
        match std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6") {
            Ok(value) if value.trim() == "1" => {
                Some("IPv6 is disabled in this network namespace".into())
            }
            _ => None,
        }
    }
}

/// Why installing or removing rules failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The settings cannot be turned into rules.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// No iptables command exists for IPv4.
    #[error(
        "no usable iptables found (tried iptables-nft-save, iptables-legacy-save, iptables-save): \
         install iptables"
    )]
    NoIptables,
    /// The requested backend's command is not installed.
    #[error("{command} not found: install it, or choose another --iptables-backend")]
    Missing {
        /// The command that was looked for.
        command: String,
    },
    /// A command could not be started or waited for.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The operating-system error.
        source: io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on standard error.
        stderr: String,
    },
}

/// What happened for one IP family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Rules were installed with this restore command.
    Installed {
        /// The restore command that was run.
        command: String,
    },
    /// Ferry's rules were removed with this restore command.
    Removed {
        /// The restore command that was run.
        command: String,
    },
    /// Cleanup found nothing of Ferry's.
    NothingToRemove,
    /// There were no rules to install (interception mode NONE).
    NothingToInstall,
    /// The family was left alone, for this reason.
    Skipped {
        /// Why (no ip6tables, IPv6 disabled, ...).
        reason: String,
    },
}

/// The outcome for one IP family, with the backend used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyReport {
    /// The family.
    pub family: Family,
    /// The backend used, when one was.
    pub backend: Option<Backend>,
    /// What happened.
    pub outcome: Outcome,
}

/// The restore input `--dry-run` prints: one section per family, each preceded by a comment
/// naming the command it is for. Nothing is read from or applied to the system.
pub fn dry_run(settings: &CaptureSettings) -> Result<String, RulesError> {
    let mut out = String::new();
    for family in Family::ALL {
        let rules = nat_rules(settings, family)?;
        let command = match family {
            Family::V4 => "iptables-restore --noflush",
            Family::V6 => "ip6tables-restore --noflush",
        };
        out.push_str(&format!("# {}: {command}\n", family.name()));
        out.push_str(&install_script(&rules, ""));
    }
    Ok(out)
}

/// Installs the rules for `settings` in the current network namespace, replacing an earlier
/// installation; IPv6 is skipped (and said so) when ip6tables or IPv6 is unavailable.
pub fn install(
    settings: &CaptureSettings,
    choice: BackendChoice,
    system: &dyn System,
) -> Result<Vec<FamilyReport>, ApplyError> {
    let mut reports = Vec::new();
    for family in Family::ALL {
        let rules = nat_rules(settings, family)?;
        if rules.is_empty() {
            reports.push(report(family, None, Outcome::NothingToInstall));
            continue;
        }
        if family == Family::V6
            && let Some(reason) = system.ipv6_unavailable()
        {
            reports.push(report(family, None, Outcome::Skipped { reason }));
            continue;
        }
        let Some((backend, save)) = current_rules(family, choice, system)? else {
            reports.push(report(family, None, skipped_no_ip6tables(choice)));
            continue;
        };
        let script = install_script(&rules, &save);
        let command = restore(backend, family, &script, system)?;
        reports.push(report(
            family,
            Some(backend),
            Outcome::Installed { command },
        ));
    }
    Ok(reports)
}

/// Removes every Ferry chain and every jump to one, touching nothing else; succeeds when
/// nothing is installed.
pub fn cleanup(
    choice: BackendChoice,
    system: &dyn System,
) -> Result<Vec<FamilyReport>, ApplyError> {
    let mut reports = Vec::new();
    for family in Family::ALL {
        let Some((backend, save)) = current_rules(family, choice, system)? else {
            reports.push(report(family, None, skipped_no_ip6tables(choice)));
            continue;
        };
        let outcome = match cleanup_script(&save) {
            None => Outcome::NothingToRemove,
            Some(script) => Outcome::Removed {
                command: restore(backend, family, &script, system)?,
            },
        };
        reports.push(report(family, Some(backend), outcome));
    }
    Ok(reports)
}

fn report(family: Family, backend: Option<Backend>, outcome: Outcome) -> FamilyReport {
    FamilyReport {
        family,
        backend,
        outcome,
    }
}

fn skipped_no_ip6tables(choice: BackendChoice) -> Outcome {
    let which = match choice {
        BackendChoice::Auto => "ip6tables",
        BackendChoice::Nft => "ip6tables-nft",
        BackendChoice::Legacy => "ip6tables-legacy",
    };
    Outcome::Skipped {
        reason: format!("{which} is not installed"),
    }
}

/// Runs a save command: `Ok(None)` if it is not installed, its output if it succeeds.
fn save(
    backend: Backend,
    family: Family,
    system: &dyn System,
) -> Result<Option<String>, ApplyError> {
    let command = backend.save_command(family);
    let output = system
        .run(&command, &[], None)
        .map_err(|source| ApplyError::Spawn {
            command: command.clone(),
            source,
        })?;
    match output {
        None => Ok(None),
        Some(out) if out.success => Ok(Some(out.stdout)),
        Some(out) => Err(ApplyError::Failed {
            command,
            status: out.status,
            stderr: out.stderr.trim().to_string(),
        }),
    }
}

/// The backend to use for a family and what its save command shows now. `None` for IPv6
/// when no ip6tables exists; an error for IPv4, or when a forced IPv4 backend is missing.
fn current_rules(
    family: Family,
    choice: BackendChoice,
    system: &dyn System,
) -> Result<Option<(Backend, String)>, ApplyError> {
    let forced = match choice {
        BackendChoice::Nft => Some(Backend::Nft),
        BackendChoice::Legacy => Some(Backend::Legacy),
        BackendChoice::Auto => None,
    };
    if let Some(backend) = forced {
        return match save(backend, family, system)? {
            Some(rules) => Ok(Some((backend, rules))),
            None if family == Family::V6 => Ok(None),
            None => Err(ApplyError::Missing {
                command: backend.save_command(family),
            }),
        };
    }
    // A variant whose save command fails (e.g. no kernel support for legacy x_tables) is
    // treated as absent while detecting.
    let usable = |backend| save(backend, family, system).ok().flatten();
    let nft = usable(Backend::Nft);
    let legacy = usable(Backend::Legacy);
    let probe = |rules: &Option<String>| match rules {
        None => Probe::Missing,
        Some(rules) => Probe::Present {
            has_rules: backend::has_rules(rules),
        },
    };
    let plain = if nft.is_none() && legacy.is_none() {
        usable(Backend::Plain)
    } else {
        None
    };
    let chosen = backend::choose(probe(&nft), probe(&legacy), plain.is_some());
    let found = match chosen {
        Some(Backend::Nft) => nft.map(|rules| (Backend::Nft, rules)),
        Some(Backend::Legacy) => legacy.map(|rules| (Backend::Legacy, rules)),
        Some(Backend::Plain) => plain.map(|rules| (Backend::Plain, rules)),
        None => None,
    };
    match found {
        None if family == Family::V4 => Err(ApplyError::NoIptables),
        found => Ok(found),
    }
}

/// Feeds `script` to the backend's restore command; returns the command line that ran.
fn restore(
    backend: Backend,
    family: Family,
    script: &str,
    system: &dyn System,
) -> Result<String, ApplyError> {
    let program = backend.restore_command(family);
    let args = ["--noflush", "--wait=30"];
    let command = format!("{program} {}", args.join(" "));
    let output = system
        .run(&program, &args, Some(script))
        .map_err(|source| ApplyError::Spawn {
            command: command.clone(),
            source,
        })?;
    match output {
        Some(out) if out.success => Ok(command),
        Some(out) => Err(ApplyError::Failed {
            command,
            status: out.status,
            stderr: out.stderr.trim().to_string(),
        }),
        None => Err(ApplyError::Missing { command: program }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// A fake system: save commands print canned output, restores are recorded.
    #[derive(Default)]
    struct Fake {
        saves: HashMap<&'static str, &'static str>,
        failing_restore: bool,
        ipv6_off: bool,
        restores: RefCell<Vec<(String, String)>>,
    }

    impl System for Fake {
        fn run(
            &self,
            program: &str,
            args: &[&str],
            stdin: Option<&str>,
        ) -> io::Result<Option<CommandOutput>> {
            if program.ends_with("-restore") {
                if !self
                    .saves
                    .contains_key(program.replace("-restore", "-save").as_str())
                {
                    return Ok(None);
                }
                self.restores.borrow_mut().push((
                    format!("{program} {}", args.join(" ")),
                    stdin.unwrap_or_default().to_string(),
                ));
                return Ok(Some(CommandOutput {
                    success: !self.failing_restore,
                    status: "exit status: 2".into(),
                    stderr: "iptables-restore: line 3 failed\n".into(),
                    ..Default::default()
                }));
            }
            Ok(self.saves.get(program).map(|out| CommandOutput {
                success: true,
                stdout: out.to_string(),
                ..Default::default()
            }))
        }

        fn ipv6_unavailable(&self) -> Option<String> {
            self.ipv6_off.then(|| "IPv6 is disabled".to_string())
        }
    }

    fn fake(saves: &[(&'static str, &'static str)]) -> Fake {
        Fake {
            saves: saves.iter().copied().collect(),
            ..Default::default()
        }
    }

    const ALL_EMPTY: [(&str, &str); 4] = [
        ("iptables-nft-save", ""),
        ("iptables-legacy-save", ""),
        ("ip6tables-nft-save", ""),
        ("ip6tables-legacy-save", ""),
    ];

    #[test]
    fn auto_prefers_nft_in_an_empty_namespace() {
        let system = fake(&ALL_EMPTY);
        let reports =
            install(&CaptureSettings::default(), BackendChoice::Auto, &system).expect("installs");
        assert_eq!(reports.len(), 2);
        for r in &reports {
            assert_eq!(r.backend, Some(Backend::Nft));
            assert!(matches!(r.outcome, Outcome::Installed { .. }), "{r:?}");
        }
        let restores = system.restores.borrow();
        assert_eq!(restores[0].0, "iptables-nft-restore --noflush --wait=30");
        assert_eq!(restores[1].0, "ip6tables-nft-restore --noflush --wait=30");
        assert!(restores[1].1.contains("-s ::6/128"));
    }

    #[test]
    fn auto_follows_existing_legacy_rules() {
        let mut saves = ALL_EMPTY;
        saves[1] = (
            "iptables-legacy-save",
            "*nat\n-A OUTPUT -j FERRY_OUTPUT\nCOMMIT\n",
        );
        let system = fake(&saves);
        let reports =
            install(&CaptureSettings::default(), BackendChoice::Auto, &system).expect("installs");
        assert_eq!(reports[0].backend, Some(Backend::Legacy));
        assert_eq!(reports[1].backend, Some(Backend::Nft));
        let restores = system.restores.borrow();
        assert!(restores[0].1.contains("-D OUTPUT -j FERRY_OUTPUT\n"));
    }

    #[test]
    fn a_failing_probe_counts_as_absent() {
        struct LegacyBroken(Fake);
        impl System for LegacyBroken {
            fn run(
                &self,
                program: &str,
                args: &[&str],
                stdin: Option<&str>,
            ) -> io::Result<Option<CommandOutput>> {
                if program.contains("legacy") {
                    return Ok(Some(CommandOutput {
                        status: "exit status: 3".into(),
                        ..Default::default()
                    }));
                }
                self.0.run(program, args, stdin)
            }
            fn ipv6_unavailable(&self) -> Option<String> {
                None
            }
        }
        let system = LegacyBroken(fake(&ALL_EMPTY));
        let reports = install(&CaptureSettings::default(), BackendChoice::Auto, &system)
            .expect("installs with nft");
        assert!(reports.iter().all(|r| r.backend == Some(Backend::Nft)));
    }

    #[test]
    fn ipv6_is_skipped_when_missing_or_disabled() {
        let system = fake(&ALL_EMPTY[..2]);
        let reports = install(&CaptureSettings::default(), BackendChoice::Auto, &system)
            .expect("installs v4");
        assert_eq!(
            reports[1].outcome,
            Outcome::Skipped {
                reason: "ip6tables is not installed".into()
            }
        );
        let mut system = fake(&ALL_EMPTY);
        system.ipv6_off = true;
        let reports =
            install(&CaptureSettings::default(), BackendChoice::Nft, &system).expect("installs v4");
        assert!(matches!(reports[1].outcome, Outcome::Skipped { .. }));
        assert_eq!(system.restores.borrow().len(), 1);
    }

    #[test]
    fn errors_name_the_command() {
        let system = fake(&[]);
        let err = install(&CaptureSettings::default(), BackendChoice::Auto, &system)
            .expect_err("no iptables");
        assert!(matches!(err, ApplyError::NoIptables));
        let err = install(&CaptureSettings::default(), BackendChoice::Legacy, &system)
            .expect_err("no legacy");
        assert_eq!(
            err.to_string(),
            "iptables-legacy-save not found: install it, or choose another --iptables-backend"
        );
        let mut system = fake(&ALL_EMPTY);
        system.failing_restore = true;
        let err = install(&CaptureSettings::default(), BackendChoice::Auto, &system)
            .expect_err("restore fails");
        assert_eq!(
            err.to_string(),
            "iptables-nft-restore --noflush --wait=30 failed (exit status: 2): \
             iptables-restore: line 3 failed"
        );
    }

    #[test]
    fn cleanup_of_nothing_succeeds_and_runs_nothing() {
        let system = fake(&ALL_EMPTY);
        let reports = cleanup(BackendChoice::Auto, &system).expect("cleanup");
        assert!(
            reports
                .iter()
                .all(|r| r.outcome == Outcome::NothingToRemove)
        );
        assert!(system.restores.borrow().is_empty());
    }

    #[test]
    fn none_mode_installs_nothing_and_tproxy_is_refused() {
        let system = fake(&ALL_EMPTY);
        let settings = CaptureSettings {
            mode: ferry_inject::annotations::InterceptionMode::None,
            ..Default::default()
        };
        let reports = install(&settings, BackendChoice::Auto, &system).expect("none");
        assert!(
            reports
                .iter()
                .all(|r| r.outcome == Outcome::NothingToInstall)
        );
        let tproxy = CaptureSettings {
            mode: ferry_inject::annotations::InterceptionMode::Tproxy,
            ..Default::default()
        };
        let err = install(&tproxy, BackendChoice::Auto, &system).expect_err("tproxy");
        assert!(err.to_string().contains("TPROXY is not supported yet"));
        assert!(system.restores.borrow().is_empty());
    }
}
