//! Rendezvous hashing, written once for everything split between a kind's live instances (the
//! runtime's partitions, the distance worker's sessions): the member with the highest score for a
//! key owns it, so all instances agree from the same member list and only a leaving or joining
//! member's share moves. The hash is FNV-1a finished with a multiply-xorshift (FNV alone mixes the
//! last bytes poorly), spelled out here so every build and platform agrees: during a rolling
//! upgrade old and new binaries must pick the same owner (`DefaultHasher` may change between
//! toolchains).

/// The member that owns `key`, if there are members.
pub fn owner<'a>(members: &'a [String], key: &[u8]) -> Option<&'a str> {
    members
        .iter()
        .map(String::as_str)
        .max_by_key(|member| score(member, key))
}

fn score(member: &str, key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in member.bytes().chain(key.iter().copied()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scores_are_the_same_in_every_build() {
        // Known answers: a change of the hash (or of its byte order) moves owners between
        // binaries of a rolling upgrade, and fails here.
        assert_eq!(score("a", &[]), 17_114_084_158_190_756_429);
        assert_eq!(
            score("member", &7u32.to_le_bytes()),
            5_499_848_978_951_165_271
        );
    }
}
