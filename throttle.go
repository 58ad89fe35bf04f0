package main

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Login throttling. Each failed login counts against the client's address
// and against the account it named; past a limit within the window, further
// attempts get 429 without a password check. An account's count clears
// when it logs in; an address's count does not, or one valid account would
// let an attacker reset it.
const (
	failureWindow      = 15 * time.Minute
	maxAccountFailures = 5  // a person mistyping does not reach it
	maxClientFailures  = 20 // several people behind one NAT do not either
	maxTracked         = 100_000
)

// bcryptWait is how long a login may queue for a bcrypt slot before it is
// answered 503: under a flood of logins the cheap requests keep their CPU.
const bcryptWait = 3 * time.Second

var errBusy = errors.New("too many logins in progress")

// shareCores returns how many bcrypt comparisons may run at once: half the
// cores, at least one, so that logins never take every core. Unless the
// operator set GOMAXPROCS, it also gives the runtime one more P per slot. A
// comparison holds its P for the quarter second it computes: with one P
// per core, a login storm leaves the cheap requests fewer Ps than cores and
// their p99 more than doubles; with the extra Ps they keep one per core,
// and the kernel shares the cores between them and bcrypt (README,
// "Performance"). It starts from the runtime's default, the CPUs this
// process may use, container limits included, so calling it again, as the
// tests do, sets the same value. It is called once per serve.
func shareCores(getenv func(string) string) (bcryptSlots int) {
	if getenv("GOMAXPROCS") != "" {
		return max(1, runtime.GOMAXPROCS(0)/2)
	}
	runtime.SetDefaultGOMAXPROCS()
	cores := runtime.GOMAXPROCS(0)
	bcryptSlots = max(1, cores/2)
	runtime.GOMAXPROCS(cores + bcryptSlots)
	return bcryptSlots
}

// loginGuard throttles failed logins and bounds how many bcrypt
// comparisons run at once. The zero value is not usable; see newLoginGuard.
type loginGuard struct {
	mu       sync.Mutex
	failures map[string]*failureCount // "a:"+account or "c:"+client

	slots     chan struct{} // one token per bcrypt comparison allowed to run
	dummyHash []byte        // compared against when the account does not exist
	trusted   []netip.Prefix
}

type failureCount struct {
	n        int // failures within the window
	inFlight int // attempts started and not yet judged
	reset    time.Time
	ended    chan struct{} // made by a waiting attempt, closed when one in flight ends
}

// newLoginGuard prepares the dummy hash at cost, so that a login for an
// unknown email costs what a wrong password costs, and lets bcryptSlots
// comparisons run at once.
func newLoginGuard(cost int, trusted []netip.Prefix, bcryptSlots int) *loginGuard {
	dummy, err := bcrypt.GenerateFromPassword([]byte(rand.Text()), cost)
	if err != nil {
		panic("bcrypt: " + err.Error()) // only for a cost out of range, which config rules out
	}
	return &loginGuard{
		failures:  make(map[string]*failureCount),
		slots:     make(chan struct{}, max(1, bcryptSlots)),
		dummyHash: dummy,
		trusted:   trusted,
	}
}

// blocked reports how long the client or the account must wait, or zero.
func (g *loginGuard) blocked(client, account string, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	wait, _ := g.checkLocked(client, account, now)
	return wait
}

// checkLocked returns how long the client or the account is blocked, or,
// when neither is, the entry whose limit the attempts in flight could use
// up, if any.
func (g *loginGuard) checkLocked(client, account string, now time.Time) (wait time.Duration, full *failureCount) {
	for _, key := range []string{"c:" + client, "a:" + account} {
		f := g.failures[key]
		if f == nil {
			continue
		}
		n := f.n
		if !now.Before(f.reset) {
			n = 0 // the window has passed
		}
		switch {
		case n >= limit(key):
			wait = max(wait, f.reset.Sub(now))
		case n+f.inFlight >= limit(key):
			full = f
		}
	}
	return wait, full
}

// limit is the number of failures a key may have within the window.
func limit(key string) int {
	if strings.HasPrefix(key, "c:") {
		return maxClientFailures
	}
	return maxAccountFailures
}

// attempt starts a login. It returns how long the client or the account is
// blocked, or zero once the attempt is in flight; the caller then ends it
// with fail, succeed or release. An attempt that, should it and those in
// flight all fail, would pass a limit waits for them to end, at most
// bcryptWait (then errBusy): the check and the count are one locked step,
// so a burst of concurrent guesses gets no more tries than a sequence. It
// waits on the full entry alone, so an attempt ending elsewhere wakes no
// one here.
func (g *loginGuard) attempt(ctx context.Context, client, account string, now func() time.Time) (time.Duration, error) {
	timer := time.NewTimer(bcryptWait)
	defer timer.Stop()
	for {
		g.mu.Lock()
		wait, full := g.checkLocked(client, account, now())
		if wait > 0 || full == nil {
			if wait == 0 {
				for _, key := range []string{"c:" + client, "a:" + account} {
					g.entryLocked(key, now()).inFlight++
				}
			}
			g.mu.Unlock()
			return wait, nil
		}
		if full.ended == nil {
			full.ended = make(chan struct{})
		}
		ended := full.ended
		g.mu.Unlock()
		select {
		case <-ended:
		case <-timer.C:
			return 0, errBusy
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// entryLocked returns key's entry, new or renewed when its window passed.
func (g *loginGuard) entryLocked(key string, now time.Time) *failureCount {
	f := g.failures[key]
	if f == nil {
		if len(g.failures) >= maxTracked {
			g.evictLocked(now)
		}
		f = &failureCount{reset: now.Add(failureWindow)}
		g.failures[key] = f
	} else if !now.Before(f.reset) {
		f.n, f.reset = 0, now.Add(failureWindow)
	}
	return f
}

// fail ends an attempt that failed: it counts for the client and the account.
func (g *loginGuard) fail(client, account string) {
	g.end(client, account, func(_ string, f *failureCount) { f.n++ })
}

// succeed ends an attempt that succeeded: the account's failures clear; the
// client's stay, or one valid account would let an attacker reset them.
func (g *loginGuard) succeed(client, account string) {
	g.end(client, account, func(key string, f *failureCount) {
		if strings.HasPrefix(key, "a:") {
			f.n = 0
		}
	})
}

// release ends an attempt that was never judged (no bcrypt slot, or the
// database failed): it counts for neither.
func (g *loginGuard) release(client, account string) {
	g.end(client, account, nil)
}

// end ends an attempt, judged by judge unless nil, and wakes the attempts
// waiting on its entries. The judgement and the wake-up are one locked
// step, so a waiter never wakes to a count about to change.
func (g *loginGuard) end(client, account string, judge func(key string, f *failureCount)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, key := range []string{"c:" + client, "a:" + account} {
		if f := g.failures[key]; f != nil {
			f.inFlight = max(0, f.inFlight-1)
			if judge != nil {
				judge(key, f)
			}
			if f.ended != nil {
				close(f.ended) // wake the attempts waiting on this entry
				f.ended = nil
			}
			g.dropIfEmptyLocked(key)
		}
	}
}

func (g *loginGuard) dropIfEmptyLocked(key string) {
	if f := g.failures[key]; f.n == 0 && f.inFlight == 0 {
		delete(g.failures, key)
	}
}

// evictLocked bounds memory when the table is full: it drops expired
// entries and then, if the table is still over 90% full (a spray from many
// addresses), entries below their limit before any that block, and of
// those the ones that end soonest. Filling the table with cheap failures
// does not lift a block; only a larger number of other blocks can. An
// entry with attempts in flight is never dropped, or their outcome would
// be lost; there are at most two per request being served.
func (g *loginGuard) evictLocked(now time.Time) {
	type entry struct {
		key      string
		blocking bool
		reset    time.Time
	}
	candidates := make([]entry, 0, len(g.failures))
	for k, f := range g.failures {
		switch {
		case f.inFlight > 0:
		case !now.Before(f.reset):
			delete(g.failures, k)
		default:
			candidates = append(candidates, entry{k, f.n >= limit(k), f.reset})
		}
	}
	excess := min(len(candidates), len(g.failures)-maxTracked*9/10)
	if excess <= 0 {
		return
	}
	slices.SortFunc(candidates, func(a, b entry) int {
		if a.blocking != b.blocking {
			if a.blocking {
				return 1
			}
			return -1
		}
		return a.reset.Compare(b.reset)
	})
	for _, e := range candidates[:excess] {
		delete(g.failures, e.key)
	}
}

// compare runs one bcrypt comparison when a slot is free, waiting at most
// bcryptWait for one. A nil hash compares against the dummy hash and
// always fails.
func (g *loginGuard) compare(ctx context.Context, hash []byte, password string) (ok bool, err error) {
	timer := time.NewTimer(bcryptWait)
	defer timer.Stop()
	select {
	case g.slots <- struct{}{}:
	case <-timer.C:
		return false, errBusy
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-g.slots }()
	if hash == nil {
		bcrypt.CompareHashAndPassword(g.dummyHash, []byte(password))
		return false, nil
	}
	return bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil, nil
}

// clientKey identifies the client for throttling: the connection's
// address, or, when that is a trusted proxy, the last address in
// X-Forwarded-For that is not one. IPv6 clients are keyed by their /64,
// which one host usually owns whole.
func (g *loginGuard) clientKey(r *http.Request) string {
	addr := remoteAddr(r.RemoteAddr)
	if g.isTrusted(addr) {
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break
			}
			addr = hop.Unmap()
			if !g.isTrusted(addr) {
				break
			}
		}
	}
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}

func (g *loginGuard) isTrusted(a netip.Addr) bool {
	for _, p := range g.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func remoteAddr(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}
