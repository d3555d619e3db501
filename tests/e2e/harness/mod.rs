//! Test harness: throwaway OpenSSH servers, peers and warren runners.
