//! Per-slot arrays that loading and compiling reuse from one program to the
//! next on the same thread.
//!
//! The verifier's and the JIT planner's arrays have one entry per
//! instruction slot. Freed after each program, their pages went back to the
//! system and the next program faulted them in afresh: about a third of a
//! large program's compile time. A [`Reused`] array takes its memory from
//! its thread's pool for its element type and gives it back when dropped,
//! so memory is kept per thread, at most [`MAX_POOLED_BYTES`] an array.

use std::cell::Cell;
use std::mem::size_of;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

/// Arrays larger than this go back to the allocator, so that a thread keeps
/// a bounded amount of memory. Every array of a program of 65,536
/// instructions fits but the loop heads' facts of one with thousands of
/// loops.
const MAX_POOLED_BYTES: usize = 4 << 20;

/// Arrays of one element type a thread keeps: as many as are alive at once
/// while a program is loaded or planned.
const MAX_POOLED_ARRAYS: usize = 4;

/// An element type with a per-thread pool of arrays, declared by [`reused!`].
pub(crate) trait Pooled: Clone + 'static {
    fn pool() -> &'static LocalKey<Cell<Vec<Vec<Self>>>>;
}

/// Declares a per-thread pool of arrays for each listed element type.
macro_rules! reused {
    ($($element:ty),* $(,)?) => {
        $(
            impl $crate::scratch::Pooled for $element {
                fn pool() -> &'static ::std::thread::LocalKey<::std::cell::Cell<Vec<Vec<$element>>>> {
                    thread_local! {
                        static POOL: ::std::cell::Cell<Vec<Vec<$element>>> = const { ::std::cell::Cell::new(Vec::new()) };
                    }
                    &POOL
                }
            }
        )*
    };
}
pub(crate) use reused;

/// An array whose memory comes from, and returns to, its thread's pool.
pub(crate) struct Reused<T: Pooled>(Vec<T>);

impl<T: Pooled> Reused<T> {
    /// `len` copies of `value`, as `vec![value; len]`.
    pub(crate) fn filled(len: usize, value: T) -> Reused<T> {
        let mut array = Reused::new();
        array.resize(len, value);
        array
    }

    /// An empty array, with the capacity a pooled one had.
    pub(crate) fn new() -> Reused<T> {
        // After the thread's pools are gone (a destructor at thread exit),
        // a fresh array.
        let pooled = T::pool().try_with(|pool| {
            let mut arrays = pool.take();
            let array = arrays.pop();
            pool.set(arrays);
            array
        });
        let mut array = pooled.ok().flatten().unwrap_or_default();
        array.clear();
        Reused(array)
    }
}

impl<T: Pooled> Drop for Reused<T> {
    fn drop(&mut self) {
        let array = std::mem::take(&mut self.0);
        if array.capacity() == 0 || array.capacity() * size_of::<T>() > MAX_POOLED_BYTES {
            return;
        }
        // Nothing to keep once the thread's pools are gone.
        let _ = T::pool().try_with(|pool| {
            let mut arrays = pool.take();
            if arrays.len() < MAX_POOLED_ARRAYS {
                arrays.push(array);
            }
            pool.set(arrays);
        });
    }
}

impl<T: Pooled> Deref for Reused<T> {
    type Target = Vec<T>;

    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T: Pooled> DerefMut for Reused<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}

impl<T: Pooled + std::fmt::Debug> std::fmt::Debug for Reused<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'a, T: Pooled> IntoIterator for &'a Reused<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> std::slice::Iter<'a, T> {
        self.0.iter()
    }
}

impl<'a, T: Pooled> IntoIterator for &'a mut Reused<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;

    fn into_iter(self) -> std::slice::IterMut<'a, T> {
        self.0.iter_mut()
    }
}

impl<T: Pooled> From<Vec<T>> for Reused<T> {
    fn from(array: Vec<T>) -> Reused<T> {
        Reused(array)
    }
}

impl<T: Pooled> FromIterator<T> for Reused<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Reused<T> {
        let mut array = Reused::new();
        array.extend(items);
        array
    }
}

reused!(bool, u8, u16, u32, usize, (usize, usize), crate::isa::Regs);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_array_lends_its_memory_to_the_next() {
        let first = Reused::filled(1000, 7u32);
        let address = first.as_ptr();
        drop(first);
        let second: Reused<u32> = Reused::filled(10, 0);
        assert_eq!(second.as_ptr(), address);
        assert_eq!(*second, vec![0; 10]);
    }

    #[test]
    fn arrays_too_large_are_not_kept() {
        let large = Reused::filled(MAX_POOLED_BYTES + 1, 1u8);
        drop(large);
        let next: Reused<u8> = Reused::new();
        assert!(next.capacity() * size_of::<u8>() <= MAX_POOLED_BYTES);
    }
}
