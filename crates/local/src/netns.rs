//! Linux network namespaces for the local stack's instances: one namespace
//! per VPC holding a bridge (the VPC's router address of each subnet on
//! it), one per instance holding its private address on a veth to that
//! bridge. Every address lives inside a namespace made here; nothing is
//! added to the host's own network.
//!
//! Namespaces are named `porter-<host port>-…`: the host port is unique to
//! a running local stack, so one stack never touches another's, and a
//! stack that starts where a dead one left namespaces behind sweeps them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Runs `ip` with `args`; fails with its own words.
pub async fn ip(args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether this process may make namespaces (root on Linux with iproute2
/// and util-linux): `None` when it can, else why not, in one line.
pub async fn unavailable(prefix: &str) -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some("instances run only on Linux (network namespaces)".into());
    }
    let probe = format!("{prefix}probe");
    match ip(&["netns", "add", &probe]).await {
        Ok(()) => {
            let _ = ip(&["netns", "del", &probe]).await;
            let unshare = tokio::process::Command::new("unshare").arg("--version").output().await;
            match unshare {
                Ok(o) if o.status.success() => None,
                _ => Some("`unshare` (util-linux) is missing".into()),
            }
        }
        Err(e) => Some(format!("network namespaces cannot be made here (root is needed): {e}")),
    }
}

/// The namespaces of this host port that exist now.
pub async fn existing(prefix: &str) -> Vec<String> {
    let Ok(out) = tokio::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .await
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Kills every process in namespace `ns`, then deletes it (its veth goes
/// with it).
pub async fn destroy(ns: &str) {
    kill_all(ns).await;
    let _ = ip(&["netns", "del", ns]).await;
}

/// SIGKILLs every process whose network namespace is `ns`.
pub async fn kill_all(ns: &str) {
    for _ in 0..3 {
        let Ok(out) = tokio::process::Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .await
        else {
            return;
        };
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if pids.is_empty() {
            return;
        }
        let _ = tokio::process::Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(std::process::Stdio::null())
            .status()
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A short, stable interface name (at most 15 bytes, as Linux wants).
pub fn link_name(tag: &str, key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("{tag}{}", &hex::encode(digest)[..10])
}

/// An IPv4 network: base address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr> {
        let (addr, prefix) = text.split_once('/').context("a CIDR has a /")?;
        let prefix: u8 = prefix.parse().context("CIDR prefix")?;
        if !(8..=28).contains(&prefix) {
            bail!("{text}: only /8 to /28 subnets are supported");
        }
        let base = u32::from(addr.parse::<Ipv4Addr>().context("CIDR address")?) & mask(prefix);
        Ok(Cidr {
            base: Ipv4Addr::from(base),
            prefix,
        })
    }

    /// The subnet's router (base + 1), as in a VPC.
    pub fn router(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    /// The addresses instances may have: AWS keeps the first four and the
    /// last of every subnet.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let base = u32::from(self.base);
        let size = 1u32 << (32 - self.prefix);
        (base + 4..base + size - 1).map(Ipv4Addr::from)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX << (32 - prefix)
}

/// Makes the VPC namespace `ns` with its bridge, if it is not there yet.
pub async fn ensure_vpc(ns: &str) -> Result<()> {
    if existing(ns).await.iter().any(|n| n == ns) {
        return Ok(());
    }
    ip(&["netns", "add", ns]).await?;
    ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
    ip(&["-n", ns, "link", "add", "br0", "type", "bridge"]).await?;
    ip(&["-n", ns, "link", "set", "br0", "up"]).await
}

/// Puts the subnet's router address on the VPC bridge (once).
pub async fn ensure_router(vpc_ns: &str, subnet: &Cidr) -> Result<()> {
    let addr = format!("{}/{}", subnet.router(), subnet.prefix);
    match ip(&["-n", vpc_ns, "addr", "add", &addr, "dev", "br0"]).await {
        Err(e) if e.to_string().contains("exists") || e.to_string().contains("already assigned") => Ok(()),
        other => other,
    }
}

/// Makes instance namespace `ns` with `addr` on its `eth0`, a veth whose
/// other end is on the bridge of `vpc_ns`.
pub async fn make_instance(ns: &str, vpc_ns: &str, addr: Ipv4Addr, subnet: &Cidr) -> Result<()> {
    let inner = link_name("pi", ns);
    let outer = link_name("pv", ns);
    ip(&["netns", "add", ns]).await?;
    let made = async {
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        ip(&[
            "-n", ns, "link", "add", &inner, "type", "veth", "peer", "name", &outer, "netns", vpc_ns,
        ])
        .await?;
        ip(&["-n", ns, "link", "set", &inner, "name", "eth0"]).await?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/{}", subnet.prefix),
            "dev",
            "eth0",
        ])
        .await?;
        ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
        ip(&["-n", ns, "route", "add", "default", "via", &subnet.router().to_string()]).await?;
        ip(&["-n", vpc_ns, "link", "set", &outer, "master", "br0"]).await?;
        ip(&["-n", vpc_ns, "link", "set", &outer, "up"]).await
    };
    if let Err(e) = made.await {
        destroy(ns).await;
        return Err(e);
    }
    Ok(())
}

/// Opens a TCP connection to `addr` from inside namespace `ns` (the VPC's:
/// where the load balancer stands). A thread of its own enters the
/// namespace, so no thread of the async runtime ever changes namespace; the
/// socket keeps the namespace it was made in.
pub async fn dial(ns: &str, addr: Ipv4Addr, port: u16, timeout: Duration) -> std::io::Result<tokio::net::TcpStream> {
    let path = format!("/run/netns/{ns}");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("porter-dial".into()).spawn(move || {
        let made = (|| -> std::io::Result<std::net::TcpStream> {
            let file = std::fs::File::open(&path)?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            let stream = std::net::TcpStream::connect_timeout(&SocketAddr::V4(SocketAddrV4::new(addr, port)), timeout)?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        })();
        let _ = tx.send(made);
    })?;
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("the dialing thread ended without an answer"))??;
    tokio::net::TcpStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_keep_aws_reserved_addresses_out() {
        let c = Cidr::parse("10.0.1.0/24").unwrap();
        assert_eq!(c.router(), Ipv4Addr::new(10, 0, 1, 1));
        let hosts: Vec<_> = c.hosts().collect();
        assert_eq!(hosts.first(), Some(&Ipv4Addr::new(10, 0, 1, 4)));
        assert_eq!(hosts.last(), Some(&Ipv4Addr::new(10, 0, 1, 254)));
        assert_eq!(Cidr::parse("10.0.1.77/24").unwrap().base, Ipv4Addr::new(10, 0, 1, 0));
        assert!(Cidr::parse("10.0.0.0/30").is_err());
        assert!(Cidr::parse("10.0.0.0").is_err());
    }

    #[test]
    fn link_names_fit_linux() {
        let n = link_name("pv", "porter-45111-i-0123456789abcdef0");
        assert!(n.len() <= 15, "{n}");
        assert_ne!(n, link_name("pv", "porter-45111-i-0123456789abcdef1"));
    }
}
