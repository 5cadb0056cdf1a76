//! Egress policies: which destinations a sandbox may reach. E2B's `allowOut` and `denyOut` take
//! IPs and CIDRs (allow beats deny); `allow_internet_access: false` is a deny of everything.
//! Domain names are refused with a clear error rather than ignored: enforcing them needs a
//! DNS/SNI-aware proxy this version does not have.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::events::{Level, LogEntry};
use crate::{now_ms, NodeError};

/// A sandbox's policy, as persisted (normalized `a.b.c.d/len` strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Egress {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// What a caller asks for.
#[derive(Debug, Clone, Default)]
pub struct EgressRequest {
    pub allow_out: Vec<String>,
    pub deny_out: Vec<String>,
    /// `Some(false)`: deny everything not allowed.
    pub internet: Option<bool>,
}

fn parse_target(field: &'static str, s: &str) -> Result<(Ipv4Addr, u8), NodeError> {
    let bad = |why: &str| NodeError::OutOfRange { field, value: s.to_owned(), allowed: why.to_owned() };
    let t = s.trim();
    let (addr, len) = match t.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().map_err(|_| bad("a prefix length from 0 to 32"))?),
        None => (t, 32),
    };
    if addr.contains(':') {
        return Err(bad("IPv4 addresses or CIDRs (sandboxes have no IPv6 route)"));
    }
    let a: Ipv4Addr = addr.parse().map_err(|_| {
        bad("IPv4 addresses or CIDRs; domain names are not supported by this Warren version (no DNS/SNI-aware filter)")
    })?;
    if len > 32 {
        return Err(bad("a prefix length from 0 to 32"));
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Ok((Ipv4Addr::from(u32::from(a) & mask), len))
}

impl EgressRequest {
    pub fn is_empty(&self) -> bool {
        self.allow_out.is_empty() && self.deny_out.is_empty() && self.internet != Some(false)
    }

    /// Checks every entry and returns the policy (`None` when there is nothing to enforce).
    pub fn resolve(&self) -> Result<Option<Egress>, NodeError> {
        if self.allow_out.len() + self.deny_out.len() > 1024 {
            return Err(NodeError::OutOfRange {
                field: "allowOut/denyOut",
                value: (self.allow_out.len() + self.deny_out.len()).to_string(),
                allowed: "at most 1024 entries".into(),
            });
        }
        let fmt = |(a, l): (Ipv4Addr, u8)| format!("{a}/{l}");
        let allow =
            self.allow_out.iter().map(|s| parse_target("allowOut", s).map(fmt)).collect::<Result<Vec<_>, _>>()?;
        let mut deny =
            self.deny_out.iter().map(|s| parse_target("denyOut", s).map(fmt)).collect::<Result<Vec<_>, _>>()?;
        if self.internet == Some(false) && !deny.iter().any(|d| d == "0.0.0.0/0") {
            deny.push("0.0.0.0/0".into());
        }
        Ok((!allow.is_empty() || !deny.is_empty()).then_some(Egress { allow, deny }))
    }
}

impl Egress {
    fn targets(list: &[String]) -> Vec<(Ipv4Addr, u8)> {
        list.iter().filter_map(|s| parse_target("egress", s).ok()).collect()
    }

    /// The policy as the runtime applies it.
    pub(crate) fn rules(&self) -> warren_runtime::EgressRules {
        warren_runtime::EgressRules { allow: Self::targets(&self.allow), deny: Self::targets(&self.deny) }
    }
}

impl Engine {
    /// Applies a policy to a live sandbox's network namespace (`None` removes it).
    pub(crate) async fn apply_egress(&self, id: &str, egress: Option<&Egress>) -> Result<(), NodeError> {
        let rec = self.get(id)?;
        let Some(h) = rec.handle.clone() else { return Err(NodeError::SandboxNotFound { id: id.into() }) };
        self.set_egress_on(&rec.id, h, egress).await
    }

    /// Applies a policy through the runtime, given the sandbox's handle.
    pub(crate) async fn set_egress_on(
        &self,
        id: &warren_types::SandboxId,
        handle: warren_runtime::Handle,
        egress: Option<&Egress>,
    ) -> Result<(), NodeError> {
        let (allow, deny) = egress.map(|e| (Egress::targets(&e.allow), Egress::targets(&e.deny))).unwrap_or_default();
        let rt = self.runtime.clone();
        let sid = id.clone();
        tokio::task::spawn_blocking(move || rt.set_egress(&sid, &handle, &allow, &deny))
            .await
            .expect("runtime task")?;
        Ok(())
    }

    /// `PUT /sandboxes/{id}/network`: replaces the sandbox's egress policy, live.
    pub async fn update_network(&self, id: &str, req: EgressRequest) -> Result<(), NodeError> {
        let egress = req.resolve()?;
        let rec = self.get(id)?;
        if rec.state != warren_types::SandboxState::Running {
            return Err(NodeError::Conflict {
                id: id.into(),
                state: "not running",
                action: "changing its network policy (resume it first)",
            });
        }
        self.apply_egress(id, egress.as_ref()).await?;
        let e = egress.clone().unwrap_or_default();
        let entry = LogEntry::warren(
            now_ms(),
            Level::Info,
            "network policy updated",
            &[("allowOut", e.allow.join(",")), ("denyOut", e.deny.join(","))],
        );
        self.update(id, Some(entry), |r| r.egress = egress)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_normalize_and_domains_are_refused() {
        assert_eq!(parse_target("f", "10.1.2.3").unwrap(), (Ipv4Addr::new(10, 1, 2, 3), 32));
        assert_eq!(parse_target("f", "10.1.2.3/8").unwrap(), (Ipv4Addr::new(10, 0, 0, 0), 8));
        assert_eq!(parse_target("f", "0.0.0.0/0").unwrap(), (Ipv4Addr::UNSPECIFIED, 0));
        let e = parse_target("allowOut", "example.com").unwrap_err().to_string();
        assert!(e.contains("domain names are not supported"), "{e}");
        assert!(parse_target("f", "::1").is_err() && parse_target("f", "1.2.3.4/33").is_err());
    }

    #[test]
    fn no_internet_is_a_deny_of_everything() {
        let r = EgressRequest { internet: Some(false), allow_out: vec!["1.1.1.1".into()], ..Default::default() };
        let e = r.resolve().unwrap().unwrap();
        assert_eq!((e.allow, e.deny), (vec!["1.1.1.1/32".to_owned()], vec!["0.0.0.0/0".to_owned()]));
        assert_eq!(EgressRequest::default().resolve().unwrap(), None);
    }
}
