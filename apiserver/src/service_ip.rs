//! Service ClusterIP ranges: the `--service-cidr` a server allocates from, and the pure parts of
//! allocation (which addresses a range offers, picking a free one). The store side lives in
//! `resources`: one key per allocated address, `/registry/ranges/serviceips/<ip>`, created in
//! the same Txn as the Service (compare `create_revision == 0`) and deleted with it.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Kubernetes' default service range.
pub const SERVICE_CIDR_DEFAULT: &str = "10.96.0.0/12";
/// Key prefix of the allocation keys (one per allocated address).
pub const ALLOCATION_PREFIX: &str = "/registry/ranges/serviceips/";
/// Random picks tried before scanning the range for a free address.
const RANDOM_PICKS: usize = 16;
/// Smallest prefix length accepted (a /8 is 16M addresses; keys are per address anyway).
const PREFIX_LEN_MIN: u8 = 8;
/// Largest: a /30 leaves 2 usable addresses.
const PREFIX_LEN_MAX: u8 = 30;

/// An IPv4 range like `10.96.0.0/12`. The network and broadcast addresses are never handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceCidr {
    base: u32,
    prefix_len: u8,
}

impl Default for ServiceCidr {
    fn default() -> Self {
        SERVICE_CIDR_DEFAULT
            .parse()
            .expect("the default service CIDR parses")
    }
}

impl FromStr for ServiceCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 CIDR like {SERVICE_CIDR_DEFAULT}"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| (PREFIX_LEN_MIN..=PREFIX_LEN_MAX).contains(l))
            .ok_or_else(|| format!("{s:?}: prefix length must be {PREFIX_LEN_MIN}..={PREFIX_LEN_MAX}"))?;
        let base = u32::from(ip);
        let cidr = ServiceCidr { base, prefix_len };
        if base & !cidr.mask() != 0 {
            return Err(format!("{s:?}: host bits are set (the network is {cidr})"));
        }
        Ok(cidr)
    }
}

impl fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix_len)
    }
}

impl ServiceCidr {
    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix_len)
    }

    fn size(&self) -> u64 {
        1u64 << (32 - self.prefix_len)
    }

    /// Whether `ip` is an address this range hands out (not its network or broadcast address).
    pub fn contains(&self, ip: &str) -> bool {
        let Ok(a) = ip.parse::<Ipv4Addr>() else {
            return false;
        };
        let a = u32::from(a);
        let offset = u64::from(a.wrapping_sub(self.base));
        a & self.mask() == self.base && offset > 0 && offset < self.size() - 1
    }

    fn at(&self, offset: u64) -> String {
        Ipv4Addr::from(self.base + offset as u32).to_string()
    }

    /// A free address: a few random picks (each one lookup), then a scan from a random start
    /// over the taken set (read only then); None when the range is full.
    pub fn pick_free<E>(
        &self,
        mut is_taken: impl FnMut(&str) -> Result<bool, E>,
        taken_all: impl FnOnce() -> Result<HashSet<String>, E>,
        mut random: impl FnMut() -> u64,
    ) -> Result<Option<String>, E> {
        let usable = self.size() - 2;
        for _ in 0..RANDOM_PICKS {
            let ip = self.at(1 + random() % usable);
            if !is_taken(&ip)? {
                return Ok(Some(ip));
            }
        }
        let taken = taken_all()?;
        let start = random() % usable;
        Ok((0..usable)
            .map(|i| self.at(1 + (start + i) % usable))
            .find(|ip| !taken.contains(ip)))
    }
}

/// The allocation key of an address.
pub fn allocation_key(ip: &str) -> String {
    format!("{ALLOCATION_PREFIX}{ip}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_contains() {
        let c: ServiceCidr = "10.96.0.0/12".parse().unwrap();
        assert_eq!(c, ServiceCidr::default());
        assert!(c.contains("10.96.0.1"));
        assert!(c.contains("10.111.255.254"));
        assert!(!c.contains("10.96.0.0"), "network address");
        assert!(!c.contains("10.111.255.255"), "broadcast address");
        assert!(!c.contains("10.112.0.1"));
        assert!(!c.contains("fd00::1"));
        assert!("10.96.0.1/12".parse::<ServiceCidr>().is_err());
        assert!("10.96.0.0/31".parse::<ServiceCidr>().is_err());
        assert!("10.96.0.0".parse::<ServiceCidr>().is_err());
    }

    #[test]
    fn picks_only_free_addresses_until_full() {
        let c: ServiceCidr = "192.168.7.0/29".parse().unwrap();
        let mut taken = HashSet::new();
        let mut n = 0u64;
        let mut rng = || {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            n >> 33
        };
        for _ in 0..6 {
            let t = taken.clone();
            let ip = c
                .pick_free(|ip| Ok::<_, ()>(t.contains(ip)), || Ok(t.clone()), &mut rng)
                .unwrap()
                .unwrap();
            assert!(c.contains(&ip), "{ip}");
            assert!(taken.insert(ip));
        }
        let t = taken.clone();
        let full = c.pick_free(|ip| Ok::<_, ()>(t.contains(ip)), || Ok(t.clone()), &mut rng);
        assert_eq!(full, Ok(None));
    }
}
