package main

import (
	"strings"
	"sync"
	"time"
)

// cacheTTL is how long a server acts on what it read without reading it
// again; the commands that change what requests check wait it out.
const cacheTTL = time.Second

// cacheCap bounds a cache: a flood of keys empties it, costing only reads.
const cacheCap = 10_000

// cache keeps answers read from the database until cacheTTL after their
// query started, so that a read that raced a change cannot outlive it by
// more. Entries go when read expired, or all at the cap: no goroutine.
type cache[V any] struct {
	now     func() time.Time
	mu      sync.Mutex
	entries map[string]cached[V]
}

type cached[V any] struct {
	value V
	until time.Time
}

func newCache[V any](now func() time.Time) *cache[V] {
	return &cache[V]{now: now, entries: make(map[string]cached[V])}
}

// get returns the answer cached for k, if it still counts.
func (c *cache[V]) get(k string) (v V, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if ok && !c.now().Before(e.until) {
		delete(c.entries, k)
		ok = false
	}
	return e.value, ok
}

// put caches v for k, read by a query that started at start.
func (c *cache[V]) put(k string, v V, start time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= cacheCap {
		clear(c.entries)
	}
	c.entries[k] = cached[V]{v, start.Add(cacheTTL)}
}

// forget drops the entries whose keys start with prefix, so that a change
// this server made holds here at once. It reads every entry: for logouts.
func (c *cache[V]) forget(prefix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.entries {
		if strings.HasPrefix(k, prefix) {
			delete(c.entries, k)
		}
	}
}
