//go:build tools

// Package tools pins the SeaweedFS command this module builds.
package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
