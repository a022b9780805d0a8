package ipc

import (
	"encoding/binary"
	"encoding/json"
	"errors"
)

// Batch is frames encoded ahead of their write: their prefixes and JSON
// headers back to back in one buffer, each payload kept by reference (not
// copied). A server's outbox of thousands of small frames then costs a few
// dozen bytes a frame, where a []Frame costs a Header (some 450 bytes)
// each, and the arrays are reused from batch to batch (Reset).
//
// A Batch is not safe for concurrent use; Conn.WriteEncoded and
// TryWriteEncoded only read it. The zero value is an empty batch. Like a
// strings.Builder, a Batch must not be copied once used: Add panics on a
// copy.
type Batch struct {
	heads []byte
	parts []batchPart
	bytes int64 // heads and payloads
	enc   *json.Encoder
	owner *Batch // the Batch enc writes into, to catch copies
}

type batchPart struct {
	end     int // the end of this frame's head in heads
	payload []byte
}

// appendBuffer is the io.Writer a Batch's json.Encoder writes into.
type appendBuffer struct{ b *[]byte }

func (w appendBuffer) Write(p []byte) (int, error) {
	*w.b = append(*w.b, p...)
	return len(p), nil
}

// Add encodes one frame onto the batch. The payload is not copied: the
// caller must not change it until the batch is written or Reset. Errors
// are *FrameError, as Conn.Write's (nothing is added then).
func (b *Batch) Add(h *Header, payload []byte, maxPayload int64) error {
	switch b.owner {
	case b:
	case nil:
		b.enc, b.owner = json.NewEncoder(appendBuffer{&b.heads}), b
		b.enc.SetEscapeHTML(false)
	default:
		panic("ipc: a Batch was copied after use")
	}
	start := len(b.heads)
	if err := appendHead(&b.heads, b.enc, h, len(payload), maxPayload); err != nil {
		b.heads = b.heads[:start]
		return err
	}
	b.parts = append(b.parts, batchPart{end: len(b.heads), payload: payload})
	b.bytes += int64(len(b.heads)-start) + int64(len(payload))
	return nil
}

// Len is the number of frames in the batch.
func (b *Batch) Len() int { return len(b.parts) }

// Size is the bytes the batch will write: its heads and its payloads.
func (b *Batch) Size() int64 { return b.bytes }

// Reset empties the batch and drops its references to payloads, keeping
// its buffers for reuse.
func (b *Batch) Reset() {
	clear(b.parts)
	b.parts, b.heads, b.bytes = b.parts[:0], b.heads[:0], 0
}

// Capacity is how many bytes of buffers the batch keeps for reuse.
func (b *Batch) Capacity() int { return cap(b.heads) + cap(b.parts)*32 }

// writeTo hands the batch to w (the Conn's buffered writer).
func (b *Batch) writeTo(w interface{ Write([]byte) (int, error) }) {
	start := 0
	for _, p := range b.parts {
		w.Write(b.heads[start:p.end])
		w.Write(p.payload)
		start = p.end
	}
}

// WriteEncoded writes an encoded batch, in order and with a single flush,
// never interleaved with concurrent writers' frames. Blocking and errors
// are as for WriteBatch (the frames were checked by Add).
func (c *Conn) WriteEncoded(b *Batch) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeCheck(); err != nil {
		return err
	}
	if b.Len() == 0 {
		return nil
	}
	b.writeTo(c.w)
	return c.flushLocked()
}

// TryWriteEncoded is WriteEncoded on the terms of TryWrite: the whole batch
// in one write if that cannot block, or nothing.
func (c *Conn) TryWriteEncoded(b *Batch) (bool, error) {
	if c.raw == nil || b.Len() == 0 {
		return false, nil
	}
	if !c.wmu.TryLock() {
		return false, nil
	}
	defer c.wmu.Unlock()
	if err := c.writeCheck(); err != nil {
		return false, err
	}
	if c.w.Buffered() > 0 || !c.roomFor(int(b.bytes)) {
		return false, nil
	}
	b.writeTo(c.w)
	return true, c.flushLocked()
}

// appendHead appends the 8-byte prefix and the JSON header of h (for a
// payload of plen bytes) to *dst, where enc writes. On error *dst is as it
// was. The checks are Conn.Write's.
func appendHead(dst *[]byte, enc *json.Encoder, h *Header, plen int, maxPayload int64) error {
	if h == nil || h.Type == "" {
		return &FrameError{Reason: FrameBadHeader, Err: errors.New(`missing or empty "type"`)}
	}
	if int64(plen) > maxPayload {
		return &FrameError{Reason: FramePayloadTooLarge, Size: int64(plen), Limit: maxPayload, Err: ErrFrameTooLarge}
	}
	start := len(*dst)
	*dst = append(*dst, 0, 0, 0, 0, 0, 0, 0, 0)
	if err := enc.Encode(h); err != nil {
		*dst = (*dst)[:start]
		return &FrameError{Reason: FrameBadHeader, Err: err}
	}
	*dst = (*dst)[:len(*dst)-1] // Encode's trailing newline
	hl := len(*dst) - start - prefixLen
	if hl > MaxHeader {
		*dst = (*dst)[:start]
		return &FrameError{Reason: FrameHeaderTooLarge, Size: int64(hl), Limit: MaxHeader, Err: ErrFrameTooLarge}
	}
	binary.BigEndian.PutUint32((*dst)[start:], uint32(hl))
	binary.BigEndian.PutUint32((*dst)[start+4:], uint32(plen))
	return nil
}
