module swiftchain.test/tlogclient

go 1.22

require golang.org/x/mod v0.43.0
