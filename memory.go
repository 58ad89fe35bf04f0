package main

import (
	"sync"
	"time"
)

// memoryTTL is how long a server acts on what it read of the database
// without reading it again. The commands that change what requests check
// wait it out before they return (users.go), so that every server has
// forgotten the old answer by then.
const memoryTTL = time.Second

// memoryCap bounds a memory's entries. Login keys are chosen by clients:
// a flood of distinct ones empties the memory rather than grow it, which
// costs reads, never a wrong answer.
const memoryCap = 10_000

// memory remembers answers read from the database for at most memoryTTL.
// An answer counts only until memoryTTL after its query started, so that
// a read that raced a change cannot outlive the change by more than that.
// Expired entries are dropped when read, or all at once at the cap: no
// goroutine sweeps them.
type memory[V any] struct {
	now     func() time.Time
	mu      sync.Mutex
	entries map[string]remembered[V]
}

type remembered[V any] struct {
	value V
	until time.Time
}

func newMemory[V any](now func() time.Time) *memory[V] {
	return &memory[V]{now: now, entries: make(map[string]remembered[V])}
}

// get returns the answer remembered for k, if it still counts.
func (m *memory[V]) get(k string) (v V, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[k]
	if ok && !m.now().Before(e.until) {
		delete(m.entries, k)
		ok = false
	}
	return e.value, ok
}

// put remembers v for k, read by a query that started at start.
func (m *memory[V]) put(k string, v V, start time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.entries) >= memoryCap {
		clear(m.entries)
	}
	m.entries[k] = remembered[V]{v, start.Add(memoryTTL)}
}
