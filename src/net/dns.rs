//! Name resolution in pure Rust. A statically linked glibc binary cannot
//! load NSS modules, so `getaddrinfo` is not an option: control-plane and
//! worker host names go through hickory, which reads `/etc/hosts` first and
//! then asks the name servers of `/etc/resolv.conf`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host:?}: {message}")]
pub struct DnsError {
    pub host: String,
    pub message: String,
}

/// A hickory resolver over the system configuration, usable by reqwest.
#[derive(Clone)]
pub struct HickoryDns {
    resolver: Arc<TokioResolver>,
}

impl std::fmt::Debug for HickoryDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HickoryDns")
    }
}

impl HickoryDns {
    /// From `/etc/resolv.conf` and `/etc/hosts`. Without a usable
    /// resolv.conf (a minimal container, a fresh network namespace) it
    /// still answers from `/etc/hosts` and for `localhost`.
    pub fn from_system() -> HickoryDns {
        let builder = TokioResolver::builder_tokio().unwrap_or_else(|e| {
            tracing::warn!(
                error = %e,
                human = "no usable /etc/resolv.conf; resolving host names from /etc/hosts only",
            );
            TokioResolver::builder_with_config(
                ResolverConfig::new(),
                TokioConnectionProvider::default(),
            )
        });
        let mut builder = builder;
        let opts = builder.options_mut();
        opts.use_hosts_file = ResolveHosts::Always;
        // IPv4 first: services here bind 127.0.0.1 or 0.0.0.0 more often
        // than ::1.
        opts.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        HickoryDns {
            resolver: Arc::new(builder.build()),
        }
    }

    /// The addresses of `host` (a name or an IP literal) with `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DnsError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let lookup = self.resolver.lookup_ip(host).await.map_err(|e| DnsError {
            host: host.to_string(),
            message: e.to_string(),
        })?;
        let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err(DnsError {
                host: host.to_string(),
                message: "no addresses".into(),
            });
        }
        Ok(addrs)
    }
}

impl Resolve for HickoryDns {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in.
            let addrs = HickoryDns::resolve(&this, name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_and_literals_resolve_without_nss() {
        let dns = HickoryDns::from_system();
        let addrs = dns.resolve("localhost", 80).await.unwrap();
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80),
            "{addrs:?}"
        );
        assert_eq!(
            dns.resolve("10.1.2.3", 5).await.unwrap(),
            vec!["10.1.2.3:5".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(dns.resolve("[::1]", 5).await.unwrap()[0].port(), 5);
    }

    #[tokio::test]
    async fn unknown_names_fail_with_the_name() {
        let dns = HickoryDns::from_system();
        let e = dns
            .resolve("no-such-host.invalid", 1)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-such-host.invalid"), "{e}");
    }
}
