//! Cluster DNS for the pods: a DNS server on the bridge address answering from the live
//! registry ([`server`], with the pure name logic in [`answer`]), and each pod's
//! `resolv.conf` and `hosts` ([`files`]).

pub mod answer;
pub mod files;
pub mod server;
