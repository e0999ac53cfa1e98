package client

// SetEntriesChunk sets the chunk size of Entries: at most entries entries,
// and no more once their data reach bytes.
func SetEntriesChunk(c *Client, entries, bytes int) { c.chunkEntries, c.chunkBytes = entries, bytes }

// OpenCosigned exposes openCosigned, the check of a witness policy.
var OpenCosigned = openCosigned
