// Package fileutil holds the one way lem replaces small files (manifests, campaign state, catalogues): readers
// see the old content or the new, never a part.
package fileutil

import (
	"os"
	"path/filepath"
)

// WriteAtomic writes data to path through a temporary file beside it (synced, mode 0644), renamed into place.
func WriteAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o644) // CreateTemp makes 0600; these files are meant to be read by others
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
