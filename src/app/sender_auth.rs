//! Sender authentication of received mail: SPF (RFC 7208) of the SMTP client, DKIM
//! (RFC 6376), DMARC (RFC 7489) of the `From:` domain and ARC (RFC 8617), by `mail-auth`.
//! DNS is asked through the resolver the operator names (`PARLEY_DNS_RESOLVER`), its answers
//! kept in a cache of a bounded number of entries for their TTL, and one mail's checks are
//! bounded in time (`PARLEY_DNS_TIMEOUT`): a check that has not answered by then is
//! `temperror`, and the mail is stored all the same (its sender is then not proven).
//!
//! Mail a trusted relay (`PARLEY_INBOUND_RELAYS`) hands over is checked as the relay took
//! it: SPF for the client address and name the relay wrote into its own `Received:` field.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::{
    NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult, MessageAuthenticator,
    SpfOutput, SpfResult,
};
use tokio::time::{Instant, timeout_at};

use crate::config::{InboundDns, SenderAuthConfig};
use crate::domain::authentication::{Authentication, Proof, Verdict, organisational};

/// DNS answers kept at once (hickory's cache, for their TTL).
const CACHE_ENTRIES: usize = 4096;
/// The longest one DNS question is waited for, and how often it is asked.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const QUERY_ATTEMPTS: usize = 2;

/// The SMTP client a mail came from, as the SMTP conversation (or a trusted relay) told it.
#[derive(Debug, Clone)]
pub struct SmtpClient {
    pub ip: IpAddr,
    /// The name given in `EHLO`/`HELO`.
    pub helo: String,
    /// The envelope sender (`MAIL FROM`), empty for a bounce.
    pub mail_from: String,
}

impl SmtpClient {
    /// The client a trusted relay names in the `Received:` field it added on top (`from
    /// helo (name [ip])`), when it wrote one that says so.
    pub fn relayed(raw: &[u8], mail_from: &str) -> Option<Self> {
        let head_end = memchr_crlfcrlf(raw).unwrap_or(raw.len().min(64 * 1024));
        let head = std::str::from_utf8(&raw[..head_end]).ok()?;
        let mut field = String::new();
        for line in head.split("\r\n") {
            if !field.is_empty() && !line.starts_with([' ', '\t']) {
                break;
            }
            if field.is_empty() {
                if line.len() > 9 && line[..9].eq_ignore_ascii_case("received:") {
                    field.push_str(&line[9..]);
                }
                continue;
            }
            field.push(' ');
            field.push_str(line.trim());
        }
        let rest = field.trim().strip_prefix("from ")?;
        let helo = rest.split_whitespace().next()?.to_string();
        let clause = rest.split(" by ").next()?;
        let open = clause.find('[')?;
        let close = open + clause[open..].find(']')?;
        let ip = clause[open + 1..close]
            .trim_start_matches("IPv6:")
            .parse()
            .ok()?;
        Some(Self {
            ip,
            helo,
            mail_from: mail_from.to_string(),
        })
    }
}

fn memchr_crlfcrlf(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Checks senders; cheap to clone.
#[derive(Clone)]
pub struct SenderAuth {
    authenticator: Arc<MessageAuthenticator>,
    timeout: Duration,
    /// Forwarders whose ARC seal is believed.
    arc_sealers: Arc<[String]>,
    /// This server's name, for SPF's `%{r}` macro.
    host: String,
}

impl SenderAuth {
    /// The checker the configuration asks for; none when `PARLEY_DNS_RESOLVER` is `off`.
    pub fn new(config: &SenderAuthConfig, host: &str) -> anyhow::Result<Option<Self>> {
        let servers: Vec<std::net::SocketAddr> = match &config.dns {
            InboundDns::Off => return Ok(None),
            InboundDns::System => {
                let (system, _) = mail_auth::hickory_resolver::system_conf::read_system_conf()
                    .map_err(|e| anyhow::anyhow!("reading /etc/resolv.conf: {e}"))?;
                let mut addrs: Vec<_> = system
                    .name_servers()
                    .iter()
                    .map(|n| n.socket_addr)
                    .collect();
                addrs.dedup();
                addrs
            }
            InboundDns::Servers(servers) => servers.clone(),
        };
        // A name that does not exist is an answer (SPF and DMARC `none`), not a reason to ask
        // the next server or again over TCP; TCP is used for answers too long for UDP.
        let servers: Vec<NameServerConfig> = servers
            .iter()
            .flat_map(|a| {
                [
                    NameServerConfig::new(*a, ProtocolConfig::Udp),
                    NameServerConfig::new(*a, ProtocolConfig::Tcp),
                ]
            })
            .collect();
        let resolver = ResolverConfig::from_parts(None, vec![], servers);
        let mut options = ResolverOpts::default();
        options.try_tcp_on_error = false;
        options.cache_size = CACHE_ENTRIES;
        options.timeout = QUERY_TIMEOUT.min(config.timeout);
        options.attempts = QUERY_ATTEMPTS;
        options.ndots = 0;
        let authenticator = MessageAuthenticator::new(resolver, options)
            .map_err(|e| anyhow::anyhow!("setting up the DNS resolver: {e}"))?;
        Ok(Some(Self {
            authenticator: Arc::new(authenticator),
            timeout: config.timeout,
            arc_sealers: config.arc_sealers.clone().into(),
            host: host.to_string(),
        }))
    }

    /// What SPF (when the SMTP client is known), DKIM, ARC and DMARC say of `raw`.
    pub async fn check(&self, raw: &[u8], client: Option<&SmtpClient>) -> Authentication {
        let deadline = Instant::now() + self.timeout;
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return Authentication::new(
                Verdict::None,
                Verdict::None,
                Verdict::None,
                Verdict::None,
                Proof::default(),
            );
        };
        let a = &self.authenticator;
        let mail_from_domain =
            client.map_or(String::new(), |c| match c.mail_from.rsplit_once('@') {
                Some((_, d)) => d.to_ascii_lowercase(),
                None => c.helo.to_ascii_lowercase(),
            });
        // SPF, DKIM and ARC ask DNS at once; DMARC then reads what they found.
        let spf = async {
            let c = client?;
            let params = if c.mail_from.is_empty() {
                SpfParameters::verify_ehlo(c.ip, &c.helo, &self.host)
            } else {
                SpfParameters::verify_mail_from(c.ip, &c.helo, &self.host, &c.mail_from)
            };
            timeout_at(deadline, a.verify_spf(params)).await.ok()
        };
        let (spf, dkim_checked, arc) = tokio::join!(
            spf,
            async { timeout_at(deadline, a.verify_dkim(&message)).await.ok() },
            async { timeout_at(deadline, a.verify_arc(&message)).await.ok() },
        );
        let dkim_verdict = dkim_checked
            .as_deref()
            .map_or(Verdict::TempError, dkim_verdict);
        let dkim = dkim_checked.unwrap_or_default();
        let no_spf = SpfOutput::default();
        let spf_output = spf.as_ref().unwrap_or(&no_spf);
        let dmarc = timeout_at(
            deadline,
            a.verify_dmarc(
                DmarcParameters::new(&message, &dkim, &mail_from_domain, spf_output)
                    .with_domain_suffix_fn(organisational),
            ),
        )
        .await
        .ok();
        let from_domain = message
            .from
            .first()
            .and_then(|f| f.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        let aligned = !from_domain.is_empty()
            && (spf_output.result() == SpfResult::Pass
                && organisational(&mail_from_domain) == organisational(&from_domain)
                || dkim.iter().any(|o| {
                    o.result() == &DkimResult::Pass
                        && o.signature().is_some_and(|s| {
                            organisational(&s.d.to_ascii_lowercase())
                                == organisational(&from_domain)
                        })
                }));
        let arc = arc.map_or(Verdict::TempError, |o| dkim_result(o.result()));
        let arc_vouched = arc == Verdict::Pass && self.sealer_vouches(&message);
        Authentication::new(
            spf.map_or(
                if client.is_some() {
                    Verdict::TempError
                } else {
                    Verdict::None
                },
                |s| spf_verdict(s.result()),
            ),
            dkim_verdict,
            dmarc.map_or(Verdict::TempError, |d| dmarc_verdict(&d)),
            arc,
            Proof {
                aligned,
                arc_vouched,
            },
        )
    }

    /// The newest ARC set (its chain verified) is a trusted forwarder's, and its
    /// `ARC-Authentication-Results` say DMARC passed when the forwarder took the mail.
    fn sealer_vouches(&self, message: &AuthenticatedMessage<'_>) -> bool {
        let Some(seal) = message
            .as_headers
            .iter()
            .filter_map(|h| h.header.as_ref().ok())
            .max_by_key(|s| s.i)
        else {
            return false;
        };
        if !self
            .arc_sealers
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&seal.d))
        {
            return false;
        }
        message
            .aar_headers
            .iter()
            .filter(|h| h.header.as_ref().is_ok_and(|r| r.i == seal.i))
            .any(|h| says_dmarc_passed(h.value))
    }
}

/// An `Authentication-Results` value states `dmarc=pass` (RFC 8601's `method=result`, case
/// ignored).
fn says_dmarc_passed(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(value).to_ascii_lowercase();
    text.split(|c: char| c == ';' || c.is_whitespace())
        .any(|word| word == "dmarc=pass")
}

fn spf_verdict(result: SpfResult) -> Verdict {
    match result {
        SpfResult::Pass => Verdict::Pass,
        SpfResult::Fail => Verdict::Fail,
        SpfResult::SoftFail => Verdict::SoftFail,
        SpfResult::Neutral => Verdict::Neutral,
        SpfResult::TempError => Verdict::TempError,
        SpfResult::PermError => Verdict::PermError,
        SpfResult::None => Verdict::None,
    }
}

fn dkim_result(result: &DkimResult) -> Verdict {
    match result {
        DkimResult::Pass => Verdict::Pass,
        DkimResult::Neutral(_) => Verdict::Neutral,
        DkimResult::Fail(_) => Verdict::Fail,
        DkimResult::PermError(_) => Verdict::PermError,
        DkimResult::TempError(_) => Verdict::TempError,
        DkimResult::None => Verdict::None,
    }
}

/// `pass` when one signature verified, else the first one's result (`none` unsigned).
fn dkim_verdict(outputs: &[DkimOutput<'_>]) -> Verdict {
    if outputs.iter().any(|o| o.result() == &DkimResult::Pass) {
        return Verdict::Pass;
    }
    outputs
        .first()
        .map_or(Verdict::None, |o| dkim_result(o.result()))
}

fn dmarc_verdict(output: &DmarcOutput) -> Verdict {
    let results = [output.spf_result(), output.dkim_result()];
    if results.contains(&&DmarcResult::Pass) {
        Verdict::Pass
    } else if results
        .iter()
        .any(|r| matches!(r, DmarcResult::TempError(_)))
    {
        Verdict::TempError
    } else if results
        .iter()
        .any(|r| matches!(r, DmarcResult::PermError(_)))
    {
        Verdict::PermError
    } else if output.dmarc_record().is_some() {
        Verdict::Fail
    } else {
        Verdict::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relays_received_field_names_the_client_it_took_the_mail_from() {
        let raw = b"Received: from mx.debtor.test (mx.debtor.test [192.0.2.7])\r\n\tby relay.agency.test (Postfix) with ESMTP id 1\r\n\tfor <c@in.test>; Sun, 6 Dec 2026 10:00:00 +0000\r\nReceived: from elsewhere [10.0.0.1]\r\nFrom: a@debtor.test\r\n\r\nbody";
        let c = SmtpClient::relayed(raw, "a@debtor.test").unwrap();
        assert_eq!(c.ip, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(c.helo, "mx.debtor.test");
        let v6 = b"Received: from h (h [IPv6:2001:db8::1]) by r; x\r\n\r\n";
        assert_eq!(
            SmtpClient::relayed(v6, "").unwrap().ip,
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert!(SmtpClient::relayed(b"From: a@b.c\r\n\r\nx", "").is_none());
        assert!(SmtpClient::relayed(b"Received: by local; x\r\n\r\n", "").is_none());
        // An address written after `by` is the relay's own, not the client's.
        assert!(SmtpClient::relayed(b"Received: from h by r [10.0.0.2]; x\r\n\r\n", "").is_none());
    }

    #[test]
    fn a_stated_dmarc_pass_is_read_and_nothing_else_is() {
        assert!(says_dmarc_passed(
            b" mx.google.com; dkim=pass; spf=fail;\r\n\tDMARC=pass (p=REJECT) header.from=a.test"
        ));
        assert!(!says_dmarc_passed(
            b" mx; dmarc=fail (p=reject); comment=dmarc=pass-ish"
        ));
        assert!(!says_dmarc_passed(b" mx; dmarc=none"));
    }
}
