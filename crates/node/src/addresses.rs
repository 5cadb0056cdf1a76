//! Sandbox addresses: handed out from the configured subnet, never the network, gateway or
//! broadcast address, and not reused right away (a rotating cursor), so a new sandbox does not
//! inherit connections meant for one that just ended.

use std::collections::HashSet;
use std::net::Ipv4Addr;

/// A Linux bridge takes at most 1024 ports; sandboxes hang off one bridge, so at most this many
/// can have a network at once (whatever the subnet's size).
pub const MAX_NETWORKED: usize = 1023;

#[derive(Debug)]
pub struct AddressPool {
    base: u32,
    size: u32,
    used: HashSet<u32>,
    next: u32,
}

impl AddressPool {
    pub fn new(subnet: Ipv4Addr, prefix: u8) -> AddressPool {
        let size = 1u32 << (32 - u32::from(prefix));
        AddressPool { base: u32::from(subnet), size, used: HashSet::new(), next: 2 }
    }

    /// Marks an address as taken (a sandbox recovered after a restart).
    pub fn claim(&mut self, a: Ipv4Addr) {
        let off = u32::from(a).wrapping_sub(self.base);
        if off < self.size {
            self.used.insert(off);
        }
    }

    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        if self.used.len() >= MAX_NETWORKED {
            return None;
        }
        // Offsets 0 (network), 1 (gateway) and size-1 (broadcast) are never handed out.
        let usable = self.size.saturating_sub(3);
        for _ in 0..usable {
            let off = self.next;
            self.next = if self.next + 1 >= self.size - 1 { 2 } else { self.next + 1 };
            if self.used.insert(off) {
                return Some(Ipv4Addr::from(self.base + off));
            }
        }
        None
    }

    pub fn release(&mut self, a: Ipv4Addr) {
        self.used.remove(&u32::from(a).wrapping_sub(self.base));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_usable_addresses_in_turn_and_runs_out() {
        let mut p = AddressPool::new(Ipv4Addr::new(10, 1, 2, 0), 29); // 8 addresses, 5 usable
        let got: Vec<_> = (0..5).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 1, 2, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 1, 2, 6)));
        assert_eq!(p.allocate(), None);
        p.release(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 1, 2, 3)));
        p.claim(Ipv4Addr::new(192, 168, 0, 1)); // outside: ignored
    }

    #[test]
    fn a_bridge_holds_at_most_1023_sandboxes() {
        let mut p = AddressPool::new(Ipv4Addr::new(10, 0, 0, 0), 16);
        assert_eq!((0..2000).filter_map(|_| p.allocate()).count(), MAX_NETWORKED);
    }

    #[test]
    fn a_released_address_is_not_the_next_one_handed_out() {
        let mut p = AddressPool::new(Ipv4Addr::new(10, 0, 0, 0), 24);
        let a = p.allocate().unwrap();
        p.release(a);
        assert_ne!(p.allocate(), Some(a));
    }
}
