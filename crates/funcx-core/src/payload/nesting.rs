//! How deeply a pickle nests its containers, checked before anything builds the values.
//!
//! Both decoders build a tree of values and then drop and visit it recursively, one stack
//! frame (or several) per level. A pickle of a few bytes per level (`]` pushes a list, `a`
//! appends it to the one below; `\x85` wraps the top in a tuple) can nest hundreds of
//! thousands of levels deep, and the recursion then overflows the thread's stack: the
//! process aborts, which no caller can catch. `serde-pickle` 1.x has no limit of its own, so
//! [`check`] runs its pickle machine over the opcodes, without building anything, and
//! refuses a pickle before any container in it would be nested more than [`MAX_NESTING`]
//! levels deep.

use std::collections::HashMap;
use std::fmt;

/// The deepest nesting of containers (tuples, lists, dicts, sets, objects) a pickle may
/// have to be decoded: the same as `serde_json`'s limit, which [`super::Payload::decode`]
/// applies to JSON, so both formats refuse the same values. Python's own recursion limit
/// (1,000) would not fit: `serde-pickle` converts and visits a value a few kilobytes of stack
/// per level in a debug build, and overflowed a 2 MiB stack (a Tokio worker thread's) at
/// 500 levels; 128 leaves most of that stack to the caller. The test below decodes the
/// deepest allowed pickle on such a thread.
pub(crate) const MAX_NESTING: u32 = 128;

/// A pickle refused before decoding, because decoding it could overflow the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Containers nest more than [`MAX_NESTING`] levels deep.
    TooDeep,
    /// A memoized container is changed after another container took a reference to it:
    /// Python writes that only for a value that contains itself, which neither decoder can
    /// represent, and the levels it adds are not tracked here.
    ChangedAfterShared,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::TooDeep => write!(
                f,
                "the pickle nests containers more than {MAX_NESTING} levels deep"
            ),
            Refused::ChangedAfterShared => f.write_str(
                "the pickle changes a memoized container after sharing it (a value that \
                 contains itself)",
            ),
        }
    }
}

/// A value on the machine's stack: how deeply it nests, and whether it is memoized.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// A value only this slot holds: it can be changed, or moved into a container.
    Owned(u32),
    /// A memoized value (`serde-pickle` keeps a reference on the stack): an index into
    /// the shared values, whose nesting changes with it everywhere it is referenced.
    Shared(usize),
}

/// A memoized value's nesting, and whether a container references it already.
#[derive(Debug, Clone, Copy)]
struct Shared {
    depth: u32,
    referenced: bool,
}

/// The pickle machine, tracking nesting only.
#[derive(Default)]
struct Machine {
    stack: Vec<Slot>,
    marked: Vec<Vec<Slot>>,
    shared: Vec<Shared>,
    memo: HashMap<u32, usize>,
}

/// Whether `pickled` nests containers at most [`MAX_NESTING`] deep, as far as
/// `serde-pickle` reads it: the walk stops with `Ok` where `serde-pickle` would stop with
/// an error of its own (an opcode it does not know, truncated or malformed input), since
/// nothing after that point is ever built.
pub(crate) fn check(pickled: &[u8]) -> Result<(), Refused> {
    let mut machine = Machine::default();
    let mut input = pickled;
    while let Some(step) = machine.step(&mut input) {
        step?;
    }
    Ok(())
}

impl Machine {
    /// Runs one opcode: `None` where `serde-pickle` stops (the end, or its own error).
    fn step(&mut self, input: &mut &[u8]) -> Option<Result<(), Refused>> {
        let opcode = *take(input, 1)?.first()?;
        match opcode {
            b'.' => return None,                                       // STOP
            0x80 => skip(input, 1)?,                                   // PROTO
            0x95 => skip(input, 8)?,                                   // FRAME
            b'(' => self.marked.push(std::mem::take(&mut self.stack)), // MARK
            b'0' => {
                // POP: the top, or a MARK when the stack above it is empty.
                if self.stack.pop().is_none() {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?; // POP_MARK
            }
            b'2' => {
                // DUP copies the value (a memoized one too: serde-pickle resolves it).
                let depth = self.depth(*self.stack.last()?);
                self.stack.push(Slot::Owned(depth));
            }
            // PUT, BINPUT, LONG_BINPUT, MEMOIZE
            b'p' => {
                let id = ascii_id(line(input)?)?;
                self.memoize(id)?;
            }
            b'q' => self.memoize(take(input, 1)?[0].into())?,
            b'r' => self.memoize(u32::from_le_bytes(array(input)?))?,
            0x94 => self.memoize(u32::try_from(self.memo.len()).ok()?)?,
            // GET, BINGET, LONG_BINGET
            b'g' => self.get(ascii_id(line(input)?)?)?,
            b'h' => self.get(take(input, 1)?[0].into())?,
            b'j' => self.get(u32::from_le_bytes(array(input)?))?,
            // Scalars: NONE, NEWTRUE, NEWFALSE; INT, LONG, FLOAT, STRING, UNICODE (a line);
            // BINFLOAT, BININT, BININT1, BININT2 (fixed); the counted ones.
            b'N' | 0x88 | 0x89 => self.stack.push(Slot::Owned(0)),
            b'I' | b'L' | b'F' | b'S' | b'V' => {
                line(input)?;
                self.stack.push(Slot::Owned(0));
            }
            b'G' | b'J' | b'K' | b'M' => {
                let len = match opcode {
                    b'G' => 8,
                    b'J' => 4,
                    b'K' => 1,
                    _ => 2,
                };
                skip(input, len)?;
                self.stack.push(Slot::Owned(0));
            }
            0x8a | b'C' | b'U' | 0x8c => {
                let len = take(input, 1)?[0];
                skip(input, len.into())?;
                self.stack.push(Slot::Owned(0));
            }
            0x8b | b'T' => {
                let len = usize::try_from(i32::from_le_bytes(array(input)?)).ok()?;
                skip(input, len)?;
                self.stack.push(Slot::Owned(0));
            }
            b'B' | b'X' => {
                let len = usize::try_from(u32::from_le_bytes(array(input)?)).ok()?;
                skip(input, len)?;
                self.stack.push(Slot::Owned(0));
            }
            0x8e | 0x8d | 0x96 => {
                let len = usize::try_from(u64::from_le_bytes(array(input)?)).ok()?;
                skip(input, len)?;
                self.stack.push(Slot::Owned(0));
            }
            // GLOBAL: two lines; STACK_GLOBAL: two names off the stack.
            b'c' => {
                line(input)?;
                line(input)?;
                self.stack.push(Slot::Owned(0));
            }
            0x93 => {
                self.pop()?;
                self.pop()?;
                self.stack.push(Slot::Owned(0));
            }
            // Empty containers: tuple, list, dict, set.
            b')' | b']' | b'}' | 0x8f => self.stack.push(Slot::Owned(1)),
            // TUPLE1, TUPLE2, TUPLE3
            0x85..=0x87 => {
                let n = usize::from(opcode - 0x85) + 1;
                let items = self.stack.split_off(self.stack.len().checked_sub(n)?);
                return Some(self.push_container(&items));
            }
            // TUPLE, LIST, DICT, FROZENSET, and INST (two lines) / OBJ (a class under the
            // MARK): their items become a new container (serde-pickle keeps an object's
            // arguments as one).
            b't' | b'l' | b'd' | 0x91 | b'i' | b'o' => {
                if opcode == b'i' {
                    line(input)?;
                    line(input)?;
                }
                let items = self.pop_mark()?;
                if opcode == b'o' {
                    self.pop()?;
                }
                return Some(self.push_container(&items));
            }
            // APPEND, SETITEM: one or two items into the container below them.
            b'a' | b's' => {
                let n = if opcode == b'a' { 1 } else { 2 };
                let items = self.stack.split_off(self.stack.len().checked_sub(n)?);
                return self.extend_top(&items);
            }
            // APPENDS, SETITEMS, ADDITEMS: the items above the MARK.
            b'e' | b'u' | 0x90 => {
                let items = self.pop_mark()?;
                return self.extend_top(&items);
            }
            // REDUCE: a callable and its arguments become (at most) a value inside them.
            b'R' => {
                let args = self.pop()?;
                self.pop()?;
                let depth = self.depth(args);
                self.stack.push(Slot::Owned(depth));
            }
            // NEWOBJ: the arguments stand for the object; NEWOBJ_EX: (args, kwargs).
            0x81 => {
                let args = self.pop()?;
                self.pop()?;
                self.stack.push(args);
            }
            0x92 => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                self.pop()?;
                return Some(self.push_container(&[args, kwargs]));
            }
            // BUILD: the state replaces the object.
            b'b' => {
                let state = self.pop()?;
                self.pop()?;
                self.stack.push(state);
            }
            _ => return None,
        }
        Some(Ok(()))
    }

    fn pop(&mut self) -> Option<Slot> {
        self.stack.pop()
    }

    /// The items above the topmost MARK, which is removed.
    fn pop_mark(&mut self) -> Option<Vec<Slot>> {
        let below = self.marked.pop()?;
        Some(std::mem::replace(&mut self.stack, below))
    }

    fn depth(&self, slot: Slot) -> u32 {
        match slot {
            Slot::Owned(depth) => depth,
            Slot::Shared(index) => self.shared[index].depth,
        }
    }

    /// How deeply a container of `items` nests, marking the memoized ones referenced.
    fn container_depth(&mut self, items: &[Slot]) -> Result<u32, Refused> {
        let mut deepest = 0;
        for &item in items {
            if let Slot::Shared(index) = item {
                self.shared[index].referenced = true;
            }
            deepest = deepest.max(self.depth(item));
        }
        match deepest + 1 {
            depth if depth > MAX_NESTING => Err(Refused::TooDeep),
            depth => Ok(depth),
        }
    }

    fn push_container(&mut self, items: &[Slot]) -> Result<(), Refused> {
        let depth = self.container_depth(items)?;
        self.stack.push(Slot::Owned(depth));
        Ok(())
    }

    /// `items` added to the container on top of the stack.
    fn extend_top(&mut self, items: &[Slot]) -> Option<Result<(), Refused>> {
        let top = *self.stack.last()?;
        let depth = match self.container_depth(items) {
            Ok(depth) => depth.max(self.depth(top)),
            Err(refused) => return Some(Err(refused)),
        };
        match top {
            Slot::Owned(_) => *self.stack.last_mut()? = Slot::Owned(depth),
            Slot::Shared(index) if self.shared[index].referenced => {
                return Some(Err(Refused::ChangedAfterShared));
            }
            Slot::Shared(index) => self.shared[index].depth = depth,
        }
        Some(Ok(()))
    }

    /// The top memoized as `id`: serde-pickle moves it into the memo and leaves a reference
    /// (a memoized value memoized again is copied).
    fn memoize(&mut self, id: u32) -> Option<()> {
        let top = self.pop()?;
        let depth = self.depth(top);
        self.shared.push(Shared {
            depth,
            referenced: false,
        });
        let index = self.shared.len() - 1;
        self.memo.insert(id, index);
        self.stack.push(Slot::Shared(index));
        Some(())
    }

    fn get(&mut self, id: u32) -> Option<()> {
        let index = *self.memo.get(&id)?;
        self.stack.push(Slot::Shared(index));
        Some(())
    }
}

/// The first `n` bytes of `input`, taken off it (both pickle readers read with these).
pub(super) fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

fn skip(input: &mut &[u8], n: usize) -> Option<()> {
    take(input, n).map(drop)
}

/// The next `N` bytes of `input`, as an array for `from_le_bytes` and the like.
pub(super) fn array<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    take(input, N)?.try_into().ok()
}

/// A text opcode's argument: up to and including its newline (serde-pickle reads a
/// missing newline to the end of the input, and then has nothing left to run).
fn line<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = input.iter().position(|&byte| byte == b'\n')?;
    let text = take(input, end + 1)?;
    Some(&text[..end])
}

/// A memo id written as decimal text (`PUT` and `GET`).
fn ascii_id(text: &[u8]) -> Option<u32> {
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_pickle::DeOptions;

    /// `depth` lists nested the way an attacker writes them: `depth` empty lists, each
    /// appended to the one below.
    fn nested_lists(depth: usize) -> Vec<u8> {
        let mut pickled = vec![0x80, 4];
        pickled.extend(std::iter::repeat_n(b']', depth));
        pickled.extend(std::iter::repeat_n(b'a', depth - 1));
        pickled.push(b'.');
        pickled
    }

    /// `None` wrapped in `depth` one-tuples: the stack never holds more than one value.
    fn nested_tuples(depth: usize) -> Vec<u8> {
        let mut pickled = vec![0x80, 4, b'N'];
        pickled.extend(std::iter::repeat_n(0x85, depth));
        pickled.push(b'.');
        pickled
    }

    /// Runs `f` on a thread with a Tokio worker's 2 MiB stack: an overflow aborts the test
    /// binary instead of passing.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .expect("spawn a thread")
            .join()
            .expect("no panic")
    }

    #[test]
    fn the_deepest_allowed_nesting_decodes_on_a_small_stack() {
        let limit = MAX_NESTING as usize;
        for pickled in [nested_lists(limit), nested_tuples(limit)] {
            assert_eq!(check(&pickled), Ok(()));
            let decoded = on_small_stack(move || {
                serde_pickle::value_from_slice(&pickled, DeOptions::new()).is_ok()
            });
            assert!(decoded);
        }
        assert_eq!(check(&nested_lists(limit + 1)), Err(Refused::TooDeep));
        assert_eq!(check(&nested_tuples(limit + 1)), Err(Refused::TooDeep));
    }

    #[test]
    fn deeper_nesting_is_refused_by_counting_without_building() {
        for depth in [50_000, 300_000] {
            assert_eq!(check(&nested_lists(depth)), Err(Refused::TooDeep));
            assert_eq!(check(&nested_tuples(depth)), Err(Refused::TooDeep));
        }
        // Through memoized lists, each new one appended to the previous one's reference, the
        // nesting could grow unseen: the second append already changes a shared list.
        let mut pickled = vec![0x80, 4, b']', 0x94];
        for id in 0..3_u32 {
            pickled.push(b'j');
            pickled.extend_from_slice(&id.to_le_bytes());
            pickled.extend_from_slice(&[b']', 0x94, b'a', b'0']);
        }
        pickled.push(b'.');
        assert_eq!(check(&pickled), Err(Refused::ChangedAfterShared));
    }

    #[test]
    fn ordinary_pickles_pass_and_self_containing_ones_are_refused() {
        let value = (vec![vec![1_i64; 3]; 1_000], "x", [(1, 2); 10]);
        let pickled = serde_pickle::to_vec(&value, serde_pickle::SerOptions::new()).unwrap();
        assert_eq!(check(&pickled), Ok(()));
        // Python 3's pickle.dumps(l, 4) for l = [1]; l.append(l).
        let python = b"\x80\x04\x95\x0a\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01h\x00e.";
        assert_eq!(check(python), Err(Refused::ChangedAfterShared));
        assert!(serde_pickle::value_from_slice(python, DeOptions::new()).is_err());
        // Where serde-pickle stops with its own error, so does the walk.
        assert_eq!(check(b"\x80\x04\xff"), Ok(()));
        assert_eq!(check(&nested_lists(5_000)[..3_000]), Ok(()));
    }
}
