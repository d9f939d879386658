//! Positions in the change log and their resume tokens.

use datastore_api::{Error, Result, ResumeToken};

/// A position: every change of batches before `tick`, and of batch `tick` up to sequence `seq`,
/// has been delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub(super) tick: i64,
    pub(super) seq: i64,
}

impl Position {
    pub(super) fn token(self) -> ResumeToken {
        // Fixed-width digits: text order is position order.
        ResumeToken::from_string(format!("{:019}.{:019}", self.tick, self.seq))
    }

    /// Parses a token exactly as [`Position::token`] writes it (19 digits, a dot, 19 digits),
    /// so a truncated, signed or hand-edited token is refused rather than read as another
    /// position.
    pub(super) fn parse(token: &ResumeToken) -> Result<Self> {
        let bad = || {
            Error::invalid_input(format!(
                "malformed resume token {:?}: not a token this change stream issued",
                token.as_str()
            ))
        };
        let (t, s) = token.as_str().split_once('.').ok_or_else(bad)?;
        let digits = |part: &str| part.len() == 19 && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(t) || !digits(s) {
            return Err(bad());
        }
        let tick: i64 = t.parse().map_err(|_| bad())?;
        let seq: i64 = s.parse().map_err(|_| bad())?;
        if tick < 1 {
            return Err(bad());
        }
        Ok(Position { tick, seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 2048,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Any text: a typed refusal or a position that writes back as the same token.
        #[test]
        fn arbitrary_tokens_are_refused_or_round_trip(
            text in proptest::prop_oneof![
                proptest::arbitrary::any::<String>(),
                "[0-9+ .-]{0,45}",
                "[0-9]{19}\\.[0-9]{19}",
            ]
        ) {
            if let Ok(p) = Position::parse(&ResumeToken::from_string(text.clone())) {
                let written = p.token();
                proptest::prop_assert_eq!(written.as_str(), text.as_str());
            }
        }
    }

    #[test]
    fn tokens_order_like_positions_and_round_trip() {
        let a = Position { tick: 2, seq: 900 };
        let b = Position { tick: 10, seq: 1 };
        assert!(a.token() < b.token());
        assert_eq!(Position::parse(&b.token()).unwrap(), b);
        for bad in [
            "",
            "x",
            "1",
            "0.5",
            "-1.2",
            "1.-2",
            "+1.+0",
            "0000000000000000001.000000000000000000",
            " 000000000000000001.0000000000000000001",
        ] {
            assert!(
                Position::parse(&ResumeToken::from_string(bad)).is_err(),
                "{bad}"
            );
        }
    }
}
