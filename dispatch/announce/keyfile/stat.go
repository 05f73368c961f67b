package keyfile

import (
	"io/fs"
	"syscall"
)

func statOf(fi fs.FileInfo) Stat {
	s := Stat{Size: fi.Size(), ModNano: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.Dev, s.Ino = uint64(st.Dev), st.Ino
	}
	return s
}
