'use strict'
// An mDNS responder made with multicast-dns, for tests/test_npm_peers_lab.py.
//
//   node mdns-responder.js LINK NAME
//
// Runs in a peer namespace behind one link (LINK, e.g. veth1) and answers A and
// AAAA questions for NAME (e.g. peer1.local, naming the link) with the link's
// own addresses, over IPv4 (224.0.0.251) and IPv6 (ff02::fb on LINK), each
// family from a socket of its own on port 5353. How it answers follows RFC 6762:
// a query from a port other than 5353 (legacy unicast, §6.7) or with the QU bit
// gets a unicast answer to its source, with the ID and questions repeated for
// the legacy one; any other query a multicast answer to the group.
// Prints one line, "ready ..." (JSON), once both families are bound and joined.
const dgram = require('dgram')
const os = require('os')
const mdns = require('multicast-dns')

const [link, name] = process.argv.slice(2)
if (!link || !name) {
  console.error('usage: node mdns-responder.js LINK NAME')
  process.exit(2)
}
const addrs = os.networkInterfaces()[link] || []
const v4 = addrs.find((a) => a.family === 'IPv4')
// The global address: the link-local one would need a zone on the asker's side.
const v6 = addrs.find((a) => a.family === 'IPv6' && !a.address.startsWith('fe80'))
if (!v4 || !v6) {
  console.error(`${link} lacks an IPv4 or a global IPv6 address`)
  process.exit(1)
}

const responders = [
  // Bound to the wildcard (multicast-dns would bind to `interface`, where no
  // datagram to the group arrives), joined and sending on the link's address.
  mdns({ interface: v4.address, bind: '0.0.0.0' }),
  // multicast-dns binds to `interface` (here "::%LINK") and joins ff02::fb there.
  // ipv6Only keeps IPv4 datagrams to 5353 off this socket (as mapped addresses).
  mdns({
    type: 'udp6',
    ip: 'ff02::fb',
    interface: `::%${link}`,
    socket: dgram.createSocket({ type: 'udp6', reuseAddr: true, ipv6Only: true })
  })
]

function records (type) {
  const out = []
  if (type === 'A' || type === 'ANY') out.push({ name, type: 'A', ttl: 120, data: v4.address })
  if (type === 'AAAA' || type === 'ANY') out.push({ name, type: 'AAAA', ttl: 120, data: v6.address })
  return out
}

responders.forEach((responder) => {
  responder.on('query', (query, rinfo) => {
    const mine = query.questions.filter((q) => q.name.toLowerCase() === name.toLowerCase())
    const answers = mine.flatMap((q) => records(q.type))
    if (answers.length === 0) return
    const legacy = rinfo.port !== 5353
    if (legacy || mine.some((q) => q.unicast)) {
      // rinfo gives an IPv6 link-local source without its zone: add the link's.
      let address = rinfo.address
      if (address.startsWith('fe80') && !address.includes('%')) address += `%${link}`
      const res = legacy
        ? { id: query.id, questions: mine, answers: answers.map((a) => ({ ...a, ttl: 10 })) }
        : { answers }
      responder.respond(res, { address, port: rinfo.port })
    } else {
      responder.respond({ answers: answers.map((a) => ({ ...a, flush: true })) })
    }
  })
  responder.on('warning', (err) => console.error(`multicast-dns warning: ${err}`))
  responder.on('error', (err) => {
    console.error(`multicast-dns error: ${err}`)
    process.exit(1)
  })
})

Promise.all(responders.map((r) => new Promise((resolve) => r.once('ready', resolve)))).then(() => {
  console.log('ready ' + JSON.stringify({ link, name, ipv4: v4.address, ipv6: v6.address }))
})

function stop () {
  let left = responders.length
  responders.forEach((r) => r.destroy(() => { if (--left === 0) process.exit(0) }))
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
