package core

// SamePlan reports whether t and u share their plan, the lists a membership's
// tables have in common: true when one was derived from the other by Update
// (a health change), false after a full build (a change of membership,
// weights or bucket count).
func (t *Table) SamePlan(u *Table) bool { return t.plan == u.plan }
