module vocelio.dev/gateway/tests/node/pause

go 1.22
