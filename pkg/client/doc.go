// Package client is the verifying Go client of a tlog log service: it appends
// audit events in batches, and it returns only checkpoints, proofs and entries
// that it has verified against the log's verifier key.
//
// # Appending
//
// [Client.Append] hands one entry to a batcher that pools the entries of all
// concurrent Append calls for at most [Config.MaxBatchDelay] (or until
// [Config.MaxBatch] entries or [Config.MaxBatchBytes] are pooled) and sends
// them in one Append RPC. Every entry carries an idempotency key, random
// unless the caller gives one with [WithIdempotencyKey], so a batch whose RPC
// failed after the server committed it can be retried safely: the retry
// answers the original indices, with Result.Duplicate set, and the log holds
// each entry once. Only transient failures are retried (Unavailable,
// ResourceExhausted, Aborted, and an attempt that ran out of its own
// deadline), with exponential backoff and jitter, as [RetryPolicy] says.
//
// The entries waiting in the pool or in an RPC are bounded by
// [Config.MaxInFlightBytes]: beyond it Append blocks until earlier batches
// complete, or until its context ends. An Append whose context ends while its
// entry is still pooled takes the entry back; once the entry is in an RPC the
// call returns the context's error, but the entry may still be appended
// (append again with the same idempotency key to learn its index).
//
// Append verifies the signature of the checkpoint the server answers with and
// that each entry's index is in its tree. [Client.AppendAndProve] also fetches
// the entry's inclusion proof in that checkpoint's tree, verifies it, and
// advances the trusted state (below) to that checkpoint through a consistency
// proof. With [WithCosignatureVerifiers] it requires, in addition, a checkpoint
// cosigned by enough witnesses.
//
// # Verifying reads
//
// Every checkpoint the package returns has been verified with the log's key
// (a [VerifiedCheckpoint]); the key is given in [Config.VerifierKey] and never
// learnt from the server. The client keeps a trusted state, the newest
// checkpoint it verified, and moves it forward only through verified RFC 6962
// consistency proofs, so it notices a log that rewrote its history:
//   - a latest checkpoint smaller than the trusted one is a rollback
//     ([ErrRollback]), even if it is a consistent prefix (a stale replica);
//   - a checkpoint of the trusted size with another root hash, or one that
//     the log cannot prove consistent with the trusted one, is a fork
//     ([ErrFork]).
//
// With a [TrustedStore] (such as a [FileStore]) the trusted state survives
// restarts, so a client also notices a rollback or fork that happened between
// two runs. Without one it lasts as long as the Client.
//
// [Client.Entries] verifies the entries it yields against the latest verified
// checkpoint of size N, without one proof per entry. It recomputes the Merkle
// tree over the range from the entries' data, with a compact range
// (transparency-dev/merkle/compact):
//   - for a range [start, end) with start > 0, it fetches the inclusion proof
//     of entry start in the tree of size N and verifies it against the signed
//     root. The proof's left-hand siblings are the roots of the perfect
//     subtrees that cover [0, start): the compact range of [0, start);
//   - it appends the leaf hashes of the fetched entries, computed from their
//     data, which gives the root hash of the tree of size end;
//   - it verifies a consistency proof from size end to N between that root
//     and the signed root (or, for end = N, compares the two).
//
// The consistency proof can only verify if the entries are exactly the
// log's first entries after start, so a forged, altered, missing or reordered
// entry fails it. Entries are verified, and yielded, a chunk at a time, which
// costs one inclusion proof per call and one consistency proof per chunk of a
// few thousand entries, and bounds memory.
//
// [Client.Receipt] returns a C2SP tlog-proof receipt after verifying it
// against the entry's data and the log's key.
//
// All verification failures wrap [ErrVerification]. Errors of the server are
// gRPC status errors, wrapped: use status.Code on them. A call whose context
// ends returns an error wrapping the context's error.
//
// # Witnesses
//
// Witness cosignatures (C2SP tlog-cosignature) are checked with
// [WithCosignatureVerifiers]: AppendAndProve then proves the entry in a
// checkpoint that carries verified cosignatures by at least k of the given
// witnesses. Until the log returns cosigned checkpoints itself (the
// require_witness_policy field of GetCheckpoint, kept free in the API), the
// client looks for them in the checkpoint of the Append answer and in the
// log's latest checkpoint, and fails with [ErrWitnessPolicy] if neither
// satisfies the policy.
package client
