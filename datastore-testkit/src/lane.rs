//! Which lane a test server comes from, decided the same way for every kind of server: a
//! server the environment names, else a Docker container or a server started here, in the
//! order the kind prefers.

/// Where the server comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    /// The one the environment names; nothing is started.
    External,
    /// A container (cargo feature `docker`, a reachable engine).
    Docker,
    /// A server started here from local binaries.
    Local,
}

/// What a kind of server knows before choosing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// The environment names a server.
    pub(crate) external: bool,
    /// The local binaries are installed.
    pub(crate) local_available: bool,
    /// Docker is tried before the local binaries (MongoDB: a real `mongo:7` beats the
    /// stand-in); otherwise only when they are missing (PostgreSQL).
    pub(crate) docker_first: bool,
    /// Built with the `docker` feature and not switched off by the environment.
    pub(crate) docker_allowed: bool,
}

/// The lane; `engine` (whether a Docker engine answers, which takes up to seconds) is asked
/// only when Docker would be chosen.
pub(crate) fn choose(options: Options, engine: impl FnOnce() -> bool) -> Choice {
    let docker_wanted = options.docker_first || !options.local_available;
    if options.external {
        Choice::External
    } else if options.docker_allowed && docker_wanted && engine() {
        Choice::Docker
    } else {
        Choice::Local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(external: bool, local: bool, first: bool, allowed: bool) -> Options {
        Options {
            external,
            local_available: local,
            docker_first: first,
            docker_allowed: allowed,
        }
    }

    #[test]
    fn lanes_in_each_kinds_order() {
        let unasked = || -> bool { panic!("the engine must not be asked") };
        // Named by the environment: nothing else is considered.
        assert_eq!(
            choose(options(true, true, true, true), unasked),
            Choice::External
        );
        // MongoDB: Docker first, when allowed and answering.
        assert_eq!(
            choose(options(false, true, true, true), || true),
            Choice::Docker
        );
        assert_eq!(
            choose(options(false, true, true, true), || false),
            Choice::Local
        );
        assert_eq!(
            choose(options(false, true, true, false), unasked),
            Choice::Local
        );
        // PostgreSQL: local binaries first; Docker only without them.
        assert_eq!(
            choose(options(false, true, false, true), unasked),
            Choice::Local
        );
        assert_eq!(
            choose(options(false, false, false, true), || true),
            Choice::Docker
        );
        assert_eq!(
            choose(options(false, false, false, false), unasked),
            Choice::Local
        );
    }
}
