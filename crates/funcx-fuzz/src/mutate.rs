//! Turns corpus entries into new inputs: the byte-level mutations of libFuzzer and AFL
//! (bit flips, interesting integers written over length fields, inserted and erased runs,
//! copies within the input, crossover with another entry, dictionary tokens), stacked one to
//! eight deep.

use crate::rng::Rng;

/// Integers that break parsers: zero, one, the edges of each width, and lengths just past a
/// buffer.
const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// Tokens of the text formats the targets read (delimiters of `squeue`/`qstat` output,
/// JSON, TOML and XML), tried where a random byte would rarely make progress.
const TOKENS: [&[u8]; 24] = [
    b"\n",
    b"|",
    b" ",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b"<",
    b">",
    b"</",
    b"=",
    b":",
    b",",
    b"0",
    b"-1",
    b"4294967295",
    b"18446744073709551615",
    b"1e999",
    b"\\u0000",
    b"\xff\xfe",
    b"[[",
    b"null",
    b"true",
];

/// Makes input `rng` decides from `corpus`, at most `max_len` bytes long.
pub fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    if corpus.is_empty() || rng.one_in(32) {
        return random_bytes(rng, max_len.min(256));
    }
    let mut data = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(8) {
        step(rng, &mut data, corpus);
    }
    data.truncate(max_len);
    data
}

fn random_bytes(rng: &mut Rng, max_len: usize) -> Vec<u8> {
    let len = rng.below(max_len + 1);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn step(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(10) {
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = if rng.one_in(2) {
                rng.next_u64() as u8
            } else {
                INTERESTING[rng.below(6)] as u8
            };
        }
        2 => {
            let at = rng.below(len + 1);
            let count = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..count).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let count = 1 + rng.below((len - at).min(16));
            data.drain(at..at + count);
        }
        4 if len > 0 => {
            // A run copied from elsewhere in the input: repeated records, nested brackets.
            let from = rng.below(len);
            let count = 1 + rng.below((len - from).min(64));
            let run = data[from..from + count].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, run);
        }
        5 if len > 0 => {
            // An integer written over what may be a length or a count.
            let width = [1, 2, 4, 8][rng.below(4)];
            let value = if rng.one_in(4) {
                rng.next_u64()
            } else {
                INTERESTING[rng.below(INTERESTING.len())]
            };
            let bytes = if rng.one_in(2) {
                value.to_le_bytes()
            } else {
                value.to_be_bytes()
            };
            let slice = if rng.one_in(2) {
                &bytes[..width]
            } else {
                &bytes[8 - width..]
            };
            let at = rng.below(len);
            let end = (at + width).min(len);
            data[at..end].copy_from_slice(&slice[..end - at]);
        }
        6 if len > 0 => data.truncate(rng.below(len)),
        7 if !corpus.is_empty() => {
            // Crossover: our head, another entry's tail.
            let other = &corpus[rng.below(corpus.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        8 => {
            let token = TOKENS[rng.below(TOKENS.len())];
            let at = rng.below(len + 1);
            data.splice(at..at, token.iter().copied());
        }
        _ => {
            // A number as text, for the text formats.
            let value = INTERESTING[rng.below(INTERESTING.len())];
            let text = if rng.one_in(2) {
                value.to_string()
            } else {
                format!("-{value}")
            };
            let at = rng.below(len + 1);
            data.splice(at..at, text.into_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_under_the_length_and_vary() {
        let corpus = vec![b"JOBID|STATE|REASON\n1|RUNNING|None\n".to_vec()];
        let mut distinct = std::collections::HashSet::new();
        for i in 0..2_000 {
            let mut rng = Rng::for_input(7, i);
            let input = mutate(&mut rng, &corpus, 40);
            assert!(input.len() <= 40);
            distinct.insert(input);
        }
        assert!(
            distinct.len() > 1_500,
            "only {} distinct inputs",
            distinct.len()
        );
    }

    #[test]
    fn the_same_seed_and_index_make_the_same_input() {
        let corpus = vec![vec![1, 2, 3, 4, 5, 6, 7, 8]];
        for i in 0..100 {
            let a = mutate(&mut Rng::for_input(42, i), &corpus, 64);
            let b = mutate(&mut Rng::for_input(42, i), &corpus, 64);
            assert_eq!(a, b);
        }
    }
}
