//! Pod IP allocation inside the cluster's loopback block.
use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::loopback::pod_address;

/// Hands out `127.N.x.y` addresses; a released address is reused only after every other one.
#[derive(Debug)]
pub struct AddressPool {
    octet: u8,
    next: u32,
    in_use: HashSet<Ipv4Addr>,
}

impl AddressPool {
    /// A pool over block `127.octet.0.0/16`.
    pub fn new(octet: u8) -> Self {
        Self {
            octet,
            next: 0,
            in_use: HashSet::new(),
        }
    }

    /// Marks an address (of a pod found running) as taken.
    pub fn reserve(&mut self, ip: Ipv4Addr) {
        self.in_use.insert(ip);
    }

    /// The next free address, `None` if the block is full.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let capacity = 254 * 255;
        for _ in 0..capacity {
            let ip = pod_address(self.octet, self.next % capacity)?;
            self.next = (self.next + 1) % capacity;
            if self.in_use.insert(ip) {
                return Some(ip);
            }
        }
        None
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.in_use.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_released_ones_are_not_reused_at_once() {
        let mut p = AddressPool::new(20);
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        assert_ne!(a, b);
        p.release(a);
        let c = p.allocate().unwrap();
        assert_ne!(c, a);
        assert_ne!(c, b);
    }

    #[test]
    fn reserved_addresses_are_skipped() {
        let mut p = AddressPool::new(20);
        p.reserve(Ipv4Addr::new(127, 20, 1, 1));
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(127, 20, 1, 2)));
    }
}
