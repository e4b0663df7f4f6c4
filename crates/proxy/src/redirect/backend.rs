//! Which iptables variant to drive: nf_tables (`iptables-nft`) or legacy x_tables
//! (`iptables-legacy`), chosen per IP family from the binaries present and the rules that
//! already exist in the network namespace, as istio-iptables does.

use std::fmt;
use std::str::FromStr;

use super::settings::Family;

/// The user's choice of backend (`--iptables-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Detect: legacy if it already holds rules, else nft, else legacy, else plain `iptables`.
    #[default]
    Auto,
    /// Always `iptables-nft-*`.
    Nft,
    /// Always `iptables-legacy-*`.
    Legacy,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "nft" => Ok(BackendChoice::Nft),
            "legacy" => Ok(BackendChoice::Legacy),
            _ => Err(format!(
                "invalid iptables backend '{s}': use auto, nft or legacy"
            )),
        }
    }
}

/// An iptables variant whose `-save` and `-restore` commands Ferry runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-nft-save`, `iptables-nft-restore` (and the ip6tables ones).
    Nft,
    /// `iptables-legacy-save`, `iptables-legacy-restore` (and the ip6tables ones).
    Legacy,
    /// Plain `iptables-save`, `iptables-restore`: whatever the system's default variant is.
    Plain,
}

impl Backend {
    fn suffix(self) -> &'static str {
        match self {
            Backend::Nft => "-nft",
            Backend::Legacy => "-legacy",
            Backend::Plain => "",
        }
    }

    fn base(family: Family) -> &'static str {
        match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// The save command for a family, e.g. `ip6tables-legacy-save`.
    pub fn save_command(self, family: Family) -> String {
        format!("{}{}-save", Self::base(family), self.suffix())
    }

    /// The restore command for a family, e.g. `iptables-nft-restore`.
    pub fn restore_command(self, family: Family) -> String {
        format!("{}{}-restore", Self::base(family), self.suffix())
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
            Backend::Plain => "default",
        })
    }
}

/// What running a variant's save command showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The command is not installed.
    Missing,
    /// The command ran; whether the namespace already holds rules in that variant.
    Present {
        /// At least one rule exists.
        has_rules: bool,
    },
}

/// Whether `iptables-save` output holds at least one rule.
pub fn has_rules(save: &str) -> bool {
    save.lines()
        .any(|line| line.trim_start().starts_with("-A "))
}

/// Picks the backend for automatic detection: legacy when it already holds rules (the
/// namespace is managed with it), otherwise nft, otherwise legacy, otherwise plain.
/// `None` when no iptables is installed at all.
pub fn choose(nft: Probe, legacy: Probe, plain_present: bool) -> Option<Backend> {
    match (nft, legacy) {
        (_, Probe::Present { has_rules: true }) => Some(Backend::Legacy),
        (Probe::Present { .. }, _) => Some(Backend::Nft),
        (Probe::Missing, Probe::Present { .. }) => Some(Backend::Legacy),
        (Probe::Missing, Probe::Missing) => plain_present.then_some(Backend::Plain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_table() {
        let missing = Probe::Missing;
        let empty = Probe::Present { has_rules: false };
        let rules = Probe::Present { has_rules: true };
        let table = [
            (empty, empty, true, Some(Backend::Nft)),
            (rules, empty, true, Some(Backend::Nft)),
            (empty, rules, true, Some(Backend::Legacy)),
            (rules, rules, true, Some(Backend::Legacy)),
            (missing, empty, true, Some(Backend::Legacy)),
            (empty, missing, false, Some(Backend::Nft)),
            (missing, missing, true, Some(Backend::Plain)),
            (missing, missing, false, None),
        ];
        for (nft, legacy, plain, want) in table {
            assert_eq!(
                choose(nft, legacy, plain),
                want,
                "{nft:?} {legacy:?} {plain}"
            );
        }
    }

    #[test]
    fn commands_and_rules() {
        assert_eq!(Backend::Nft.save_command(Family::V4), "iptables-nft-save");
        assert_eq!(
            Backend::Legacy.restore_command(Family::V6),
            "ip6tables-legacy-restore"
        );
        assert_eq!(
            Backend::Plain.restore_command(Family::V4),
            "iptables-restore"
        );
        assert!(!has_rules("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"));
        assert!(has_rules("*nat\n-A OUTPUT -j X\nCOMMIT\n"));
        assert_eq!("NFT".parse(), Ok(BackendChoice::Nft));
        assert!("bpf".parse::<BackendChoice>().is_err());
    }
}
