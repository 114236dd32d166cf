//go:build tools

// Package adapter pins prometheus-adapter for the real-node tests: the Go
// module proxy does not list its versions, so `go install ...@version`
// cannot resolve it, while a module that requires it builds it with
// `go build sigs.k8s.io/prometheus-adapter/cmd/adapter` (tests/controlplane/build.sh).
package adapter

import _ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
