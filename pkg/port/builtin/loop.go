package builtin

import (
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// loop is one OS thread that owns a set of sockets and moves their bytes
// with non-blocking splice(2), driven by epoll. Measured on the 2-vCPU VM
// this project runs on: every time a forwarder thread sleeps and is woken
// on an idle vCPU, the wake-up costs ~50 µs, so the classic two goroutines
// per connection (two sleeps per round trip, plus Go's netpoller handing
// the work to another thread) added ~100 µs to every request. One thread
// per loop, no goroutines per connection and an optional short busy poll
// after small messages (Options.BusyPoll) take most of that away.
//
// Everything a loop owns (handlers, connections, spare pipes) is touched
// only on its thread; other goroutines hand it work with post.
type loop struct {
	epfd, evfd int
	busyPoll   time.Duration

	mu    sync.Mutex
	tasks []func()

	handlers map[int32]handler
	pipes    []pipe  // spare, empty
	conns    []*conn // spare, ended (see accept in tcp.go for why)
	moved    int     // bytes moved while handling the current batch of events
	stop     bool
	done     chan struct{}
}

type handler interface {
	event(fd int32, ev uint32)
}

type pipe struct{ r, w int }

// sparePipes are made when the loop starts and reused, so that a short
// connection costs no pipe2/fcntl and the fd count stays flat. Few: each
// 1 MiB pipe counts 256 pages against the user's pipe-user-pages-soft
// (16384 by default), shared with every other program of the user.
const sparePipes = 2

// pipeSize is what Go's own splice uses: big enough that a bulk transfer
// moves up to 1 MiB per call. Over the user's pipe-user-pages-soft quota
// the kernel refuses it and the pipe keeps its default 64 KiB.
const pipeSize = 1 << 20

// bulkBytes: a batch of events that moved at least this much is a bulk
// transfer, which gains nothing from busy polling; only smaller, request-
// like traffic makes the loop poll before it sleeps.
const bulkBytes = 64 << 10

// spinMisses busy polls in a row that end with nothing to do make the
// loop sleep at once for the next spinRest small batches. A poll that
// keeps missing is worse than none where CPUs are few: measured on this
// 2-vCPU VM under load (bench-net, issue 16), the spinning thread held a
// vCPU that the client and the server needed, and the Go client's round
// trip through the forwarder took a median 70.6 µs with the 50 µs poll
// against 19.6 µs without it (RootlessKit: 21.6). Where the poll catches
// replies it stays on; a miss now and then (a client pausing) does not
// stop it.
const (
	spinMisses = 4
	spinRest   = 64
)

func newLoop(busyPoll time.Duration) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	l := &loop{epfd: epfd, evfd: evfd, busyPoll: busyPoll, handlers: map[int32]handler{}, done: make(chan struct{})}
	if err := l.add(evfd, unix.EPOLLIN, nil); err != nil {
		l.closeFDs()
		return nil, err
	}
	for range sparePipes {
		p, err := newPipe()
		if err != nil {
			break
		}
		l.pipes = append(l.pipes, p)
	}
	go l.run()
	return l, nil
}

func newPipe() (pipe, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return pipe{}, err
	}
	// A larger pipe means fewer splice rounds; refused (over
	// fs.pipe-max-size), the default 64 KiB pipe still works.
	_, _ = unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, pipeSize)
	return pipe{p[0], p[1]}, nil
}

func (p pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

func (l *loop) getPipe() (pipe, error) {
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return p, nil
	}
	return newPipe()
}

// putPipe keeps an empty pipe for the next connection; one with bytes
// still in it (a connection cut mid-transfer) is closed.
func (l *loop) putPipe(p pipe, empty bool) {
	if empty && len(l.pipes) < sparePipes {
		l.pipes = append(l.pipes, p)
		return
	}
	p.close()
}

// spareConns bounds the ended connections a loop keeps for reuse.
const spareConns = 64

func (l *loop) newConn() *conn {
	if n := len(l.conns); n > 0 {
		c := l.conns[n-1]
		l.conns = l.conns[:n-1]
		return c
	}
	return &conn{l: l}
}

// freeConn keeps an ended connection for the next one, with its timer. An
// event for one of its fds still in the loop's current batch finds no
// handler (forget dropped them); a dial timer that fires late finds it not
// connecting, or connecting with a later deadline.
func (l *loop) freeConn(c *conn) {
	if len(l.conns) >= spareConns {
		return
	}
	*c = conn{l: l, timer: c.timer}
	l.conns = append(l.conns, c)
}

func (l *loop) add(fd int, events uint32, h handler) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return err
	}
	if h != nil {
		l.handlers[int32(fd)] = h
	}
	return nil
}

// forget drops fd from the loop; the caller closes it.
func (l *loop) forget(fd int) {
	// ENOENT (never added, or paused) is fine: either way fd is out.
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	delete(l.handlers, int32(fd))
}

// post runs fn on the loop's thread.
func (l *loop) post(fn func()) {
	l.mu.Lock()
	l.tasks = append(l.tasks, fn)
	l.mu.Unlock()
	var one = [8]byte{1}
	// EAGAIN means the counter is full, so a wakeup is pending anyway.
	_, _ = unix.Write(l.evfd, one[:])
}

// do runs fn on the loop's thread and waits for it.
func (l *loop) do(fn func()) {
	done := make(chan struct{})
	l.post(func() { fn(); close(done) })
	select {
	case <-done:
	case <-l.done:
	}
}

func (l *loop) runTasks() {
	var b [8]byte
	// Resets the counter; EAGAIN (already read) leaves nothing to do.
	_, _ = unix.Read(l.evfd, b[:])
	l.mu.Lock()
	tasks := l.tasks
	l.tasks = nil
	l.mu.Unlock()
	for _, fn := range tasks {
		fn()
	}
}

// close stops the loop; it closes what it still owns.
func (l *loop) close() {
	l.post(func() { l.stop = true })
	<-l.done
}

func (l *loop) closeFDs() {
	for _, p := range l.pipes {
		p.close()
	}
	l.pipes = nil
	unix.Close(l.evfd)
	unix.Close(l.epfd)
}

func (l *loop) run() {
	// The thread blocks in epoll_wait and may busy-poll: keep it to this
	// goroutine so that Go schedules nothing else onto it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(l.done)
	defer l.closeFDs()
	events := make([]unix.EpollEvent, 256)
	var spinUntil time.Time
	// misses counts busy polls in a row that ended with nothing to do;
	// rest is how many small batches go without one after spinMisses of
	// them (see spinMisses).
	misses, rest := 0, 0
	for {
		timeout := -1
		if !spinUntil.IsZero() {
			if time.Now().Before(spinUntil) {
				timeout = 0
			} else {
				spinUntil = time.Time{}
				if misses++; misses >= spinMisses {
					misses, rest = 0, spinRest
				}
			}
		}
		n, err := unix.EpollWait(l.epfd, events, timeout)
		if err != nil || n == 0 {
			if timeout == 0 {
				// An empty poll gives the vCPU to whatever else is
				// runnable on it (often the server the poll waits for);
				// with nothing else there it returns at once.
				_, _, _ = unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
			}
			continue // EINTR, or an empty poll while spinning
		}
		if timeout == 0 {
			misses = 0 // the poll caught what it waited for
		}
		l.moved = 0
		for _, ev := range events[:n] {
			if ev.Fd == int32(l.evfd) {
				l.runTasks()
				if l.stop {
					return
				}
				continue
			}
			if h := l.handlers[ev.Fd]; h != nil {
				h.event(ev.Fd, ev.Events)
			}
		}
		switch {
		case l.moved >= bulkBytes:
			spinUntil = time.Time{}
		case l.busyPoll > 0 && l.moved > 0 && rest > 0:
			rest--
			spinUntil = time.Time{}
		case l.busyPoll > 0 && l.moved > 0:
			spinUntil = time.Now().Add(l.busyPoll)
		}
	}
}
