//! The per-evaluation resource limiter: a cap on the total linear memory
//! of one evaluation, across all the memories of the component's core
//! instances, and on table growth.

use wasmtime::ResourceLimiter;

/// Most table elements one evaluation may allocate in a table.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Caps the linear memory of one evaluation and remembers whether the cap
/// was hit, so that the trap that usually follows (an allocator giving up)
/// is reported as a memory fault.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: usize,
    used: usize,
    exceeded: bool,
}

impl MemoryLimiter {
    /// A limiter allowing `limit` bytes in all.
    pub fn new(limit: u64) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: 0,
            exceeded: false,
        }
    }

    /// Whether a growth was refused.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes of linear memory allowed so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Allows `limit` bytes in all from now on (what is already allowed
    /// stays).
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = usize::try_from(limit).unwrap_or(usize::MAX);
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grown = self.used.saturating_add(desired.saturating_sub(current));
        if grown > self.limit {
            self.exceeded = true;
            return Ok(false);
        }
        self.used = grown;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_counted_across_memories() {
        let mut limiter = MemoryLimiter::new(10 << 20);
        assert!(limiter.memory_growing(0, 6 << 20, None).unwrap_or(false));
        assert!(limiter.memory_growing(0, 3 << 20, None).unwrap_or(false));
        assert!(!limiter.exceeded());
        assert!(!limiter.memory_growing(6 << 20, 8 << 20, None).unwrap_or(true));
        assert!(limiter.exceeded());
    }
}
