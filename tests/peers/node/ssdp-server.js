'use strict'
// An SSDP device made with node-ssdp's Server, for tests/test_npm_peers_lab.py.
//
//   node ssdp-server.js LINK ST
//
// Runs in a peer namespace behind one link (LINK, e.g. veth1) and answers an
// M-SEARCH for ST (or ssdp:all) the way node-ssdp does: by unicast to the
// searcher's address and port, from port 1900. Its UDN names the link, so the
// test can tell which link's device answered; LOCATION is the link's address.
// Prints one line, "ready ..." (JSON), once its socket is bound and joined.
const os = require('os')
const { Server } = require('node-ssdp')

const [link, st] = process.argv.slice(2)
if (!link || !st) {
  console.error('usage: node ssdp-server.js LINK ST')
  process.exit(2)
}
const address = (os.networkInterfaces()[link] || []).find((a) => a.family === 'IPv4')
if (!address) {
  console.error(`no IPv4 address on ${link}`)
  process.exit(1)
}

const server = new Server({
  udn: `uuid:mcastio-npm-peer-${link}`,
  location: `http://${address.address}:8080/${link}.xml`,
  // Only this link: node-ssdp opens one socket per IPv4 interface it is given.
  interfaces: [link],
  // Its NOTIFYs (multicast to the group, 3 s after start, then every adInterval)
  // are not under test: pushed far out so the host hears answers only.
  adInterval: 600000,
  suppressRootDeviceAdvertisements: true
})
server.addUSN(st)

function stop () {
  server.stop()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)

server.start().then(() => {
  console.log('ready ' + JSON.stringify({ link, address: address.address }))
}, (err) => {
  console.error(`node-ssdp server failed to start: ${err}`)
  process.exit(1)
})
