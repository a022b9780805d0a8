package pool

import (
	"fmt"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Identity is a user that tasks or workers run as: a uid, a primary gid
// and the supplementary groups, all three always set on the child (never
// inherited from the supervisor).
type Identity struct {
	UID    uint32
	GID    uint32
	Groups []uint32 // the user's supplementary groups; empty means none
}

// LookupIdentity resolves uid in the account database as runuser and
// systemd's User= do: the account's primary gid and its groups
// (initgroups). A uid without an account runs with gid (the peer's own
// gid from SO_PEERCRED) and no supplementary groups. It reads /etc/passwd
// and /etc/group (or NSS, in a cgo build); it does not block otherwise.
func LookupIdentity(uid, gid uint32) Identity {
	id := Identity{UID: uid, GID: gid}
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return id
	}
	if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
		id.GID = uint32(g)
	}
	id.Groups = userGroups(u, id.GID)
	return id
}

// rootIdentityTTL is how long rootIdentity keeps what it read: a change
// to root's groups in the account database is seen this much later.
const rootIdentityTTL = 5 * time.Second

var rootID struct {
	sync.Mutex
	id Identity
	at time.Time
}

// rootIdentity is LookupIdentity(0, 0), read at most once per
// rootIdentityTTL: a root supervisor's own tasks and workers run as root
// with root's groups, and looking them up per command (getpwuid and
// getgrouplist, /etc/passwd and /etc/group opened and parsed) was a sixth
// of cgpool run's own CPU time over many short commands.
func rootIdentity() Identity {
	rootID.Lock()
	defer rootID.Unlock()
	if rootID.at.IsZero() || time.Since(rootID.at) > rootIdentityTTL {
		rootID.id, rootID.at = LookupIdentity(0, 0), time.Now()
	}
	return rootID.id
}

// lookupUser resolves a configured user: a name or a numeric uid, with an
// optional group (a name or a numeric gid) that replaces the account's
// primary group.
func lookupUser(name, group string) (Identity, error) {
	var id Identity
	u, err := user.Lookup(name)
	if err != nil {
		u, err = user.LookupId(name)
	}
	switch {
	case err == nil:
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		id = Identity{UID: uint32(uid), GID: uint32(gid)}
		id.Groups = userGroups(u, id.GID)
	default:
		n, perr := strconv.ParseUint(name, 10, 32)
		if perr != nil {
			return id, fmt.Errorf("user %q: no such user in the account database (%v)", name, err)
		}
		id = Identity{UID: uint32(n), GID: uint32(n)} // no account: its own gid, no groups
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			g, err = user.LookupGroupId(group)
		}
		if err == nil {
			n, _ := strconv.ParseUint(g.Gid, 10, 32)
			id.GID = uint32(n)
		} else if n, perr := strconv.ParseUint(group, 10, 32); perr == nil {
			id.GID = uint32(n)
		} else {
			return id, fmt.Errorf("group %q: no such group (%v)", group, err)
		}
	}
	return id, nil
}

// userGroups returns u's supplementary groups other than its primary gid.
func userGroups(u *user.User, primary uint32) []uint32 {
	ids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	var out []uint32
	for _, s := range ids {
		if g, err := strconv.ParseUint(s, 10, 32); err == nil && uint32(g) != primary {
			out = append(out, uint32(g))
		}
	}
	return out
}

// credential is the identity as spawn takes it: setgroups, setgid and
// setuid are all applied (Groups empty means setgroups(0): none).
func (id *Identity) credential() *syscall.Credential {
	return &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: append([]uint32{}, id.Groups...)}
}

func (id Identity) String() string {
	return fmt.Sprintf("uid %d gid %d groups %v", id.UID, id.GID, id.Groups)
}
