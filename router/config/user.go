package config

import (
	"os/user"
	"strconv"
)

// runUser reads router.user (default DefaultUser) and resolves it to the
// ids the appliance drops to once its devices are open. "root" (or 0)
// keeps root. The name is looked up in the password database of the
// machine that loads the file: an unknown user is a problem of the file.
func (d *decoder) runUser(t *table, r *Router) {
	r.User = DefaultUser
	if s, ok := t.str("user"); ok {
		r.User = s
	}
	if r.User == "" {
		t.errorf("user", "must not be empty: name the user the appliance runs as once its devices are open (\"root\" keeps root)")
		return
	}
	var u *user.User
	var err error
	if _, nerr := strconv.Atoi(r.User); nerr == nil {
		u, err = user.LookupId(r.User)
	} else {
		u, err = user.Lookup(r.User)
	}
	if err != nil {
		if t.has("user") {
			t.errorf("user", "%q: %v", r.User, err)
		} else {
			t.d.problems = append(t.d.problems, Problem{File: t.d.file, Key: "router.user",
				Msg: "the default user \"" + DefaultUser + "\" does not exist here: set [router] user (\"root\" keeps root)"})
		}
		return
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		t.errorf("user", "%q: ids %q/%q are not numbers", r.User, u.Uid, u.Gid)
		return
	}
	r.UID, r.GID = uid, gid
}
