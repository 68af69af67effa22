//! Who may hold a `global/` resource: the first requests of its etcd
//! queue, by create revision, as far as they fit together. The same rules
//! as the local lease table (DESIGN "Rules of the lease table", "Counted
//! permits"), applied across hosts: one EXCLUSIVE or any number of SHARED
//! at the head; with a capacity C, requests while their permits add up to
//! at most C, an EXCLUSIVE one taking all C; strict FIFO, so a request
//! that does not fit stops those behind it. Pure: no etcd here.

/// One request in a global queue, as far as admission cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// EXCLUSIVE (true) or SHARED.
    pub exclusive: bool,
    /// Permits it takes (SHARED on a semaphore); 0 reads as 1.
    pub permits: u32,
    /// The semaphore capacity it named; 0 = not a semaphore.
    pub capacity: u32,
}

/// How many requests from the head of `queue` (oldest first) may hold at
/// once. The oldest request's capacity is the resource's: it was there
/// first (a broker refuses a different capacity locally; across hosts the
/// oldest wins).
pub fn admitted(queue: &[Request]) -> usize {
    let Some(first) = queue.first() else {
        return 0;
    };
    let capacity = u64::from(first.capacity);
    if capacity == 0 {
        if first.exclusive {
            return 1;
        }
        return queue.iter().take_while(|r| !r.exclusive).count();
    }
    let mut used = 0u64;
    let mut n = 0;
    for r in queue {
        let need = if r.exclusive {
            capacity
        } else {
            u64::from(r.permits.max(1))
        };
        if used + need > capacity {
            break;
        }
        used += need;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex() -> Request {
        Request {
            exclusive: true,
            permits: 0,
            capacity: 0,
        }
    }
    fn sh() -> Request {
        Request {
            exclusive: false,
            ..ex()
        }
    }
    fn sem(permits: u32, capacity: u32) -> Request {
        Request {
            exclusive: false,
            permits,
            capacity,
        }
    }

    #[test]
    fn exclusive_alone_shared_together_fifo_kept() {
        assert_eq!(admitted(&[]), 0);
        assert_eq!(admitted(&[ex(), ex()]), 1);
        assert_eq!(admitted(&[sh(), sh(), ex(), sh()]), 2);
        assert_eq!(admitted(&[ex(), sh()]), 1);
    }

    #[test]
    fn permits_add_up_to_the_capacity_and_no_barging() {
        assert_eq!(admitted(&[sem(1, 2), sem(1, 2), sem(1, 2)]), 2);
        // 2 of 3 held; the next needs 2: it waits, and the 1 behind it too.
        assert_eq!(admitted(&[sem(2, 3), sem(2, 3), sem(1, 3)]), 1);
        let all = Request {
            exclusive: true,
            permits: 0,
            capacity: 3,
        };
        assert_eq!(admitted(&[all, sem(1, 3)]), 1);
        assert_eq!(admitted(&[sem(1, 3), all]), 1);
    }
}
