/* The batched send of mcastio._platform.linux._cdrain: sendmmsg, or one UDP GSO message.
 *
 * Part of the optional extension built from _cdrain.c (see there); used by
 * mcastio/_sendmany.py, which falls back to one sendto per datagram without it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/socket.h>

#include "_cdrain.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

/* The most control bytes a caller may add to each message: one in6_pktinfo
 * cmsg (CMSG_SPACE(20) = 40 on LP64) with room to spare. */
#define MCASTIO_MAX_CONTROL 64

/* send_many(fd, payloads, address, segment, control=b"") -> messages sent
 *
 * One sendmmsg call (the kernel takes at most UIO_MAXIOV = 1024 messages per
 * call) for payloads sent to the packed sockaddr address. With segment > 0 the
 * payloads go as one UDP GSO message of that segment size (UDP_SEGMENT): every
 * payload but the last must be exactly segment bytes; returns len(payloads).
 * control, packed cmsgs (an IP_PKTINFO naming the interface), goes with every
 * message, after the UDP_SEGMENT one. */
PyObject *
mcastio_send_many(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "send_many(fd, payloads, address, segment, control=b'')");
        return NULL;
    }
    int fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    PyObject *seq = PySequence_Fast(args[1], "payloads must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_buffer addr;
    if (PyObject_GetBuffer(args[2], &addr, PyBUF_SIMPLE) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_buffer extra = {0};
    if (nargs == 5 && PyObject_GetBuffer(args[4], &extra, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&addr);
        Py_DECREF(seq);
        return NULL;
    }
    long segment = PyLong_AsLong(args[3]);
    PyObject *result = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MCASTIO_MAX_SEND)
        n = MCASTIO_MAX_SEND;
    Py_buffer *views = PyMem_Calloc(n ? n : 1, sizeof(Py_buffer));
    struct iovec *iov = PyMem_Calloc(n ? n : 1, sizeof(struct iovec));
    struct mmsghdr *msgs = PyMem_Calloc(n ? n : 1, sizeof(struct mmsghdr));
    Py_ssize_t held = 0;
    if (segment == -1 && PyErr_Occurred())
        goto done;
    if (extra.len > MCASTIO_MAX_CONTROL) {
        PyErr_SetString(PyExc_ValueError, "control: at most 64 bytes");
        goto done;
    }
    if (views == NULL || iov == NULL || msgs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < n; held++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, held), &views[held],
                               PyBUF_SIMPLE) < 0)
            goto done;
        iov[held].iov_base = views[held].buf;
        iov[held].iov_len = (size_t)views[held].len;
    }
    int sent;
    if (segment > 0) {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(uint16_t)) + MCASTIO_MAX_CONTROL];
        } control;
        memset(&control, 0, sizeof control);
        struct msghdr m = {0};
        m.msg_name = addr.buf;
        m.msg_namelen = (socklen_t)addr.len;
        m.msg_iov = iov;
        m.msg_iovlen = (size_t)n;
        m.msg_control = control.buf;
        m.msg_controllen = CMSG_SPACE(sizeof(uint16_t)) + (size_t)extra.len;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t size16 = (uint16_t)segment;
        memcpy(CMSG_DATA(c), &size16, sizeof size16);
        if (extra.len)
            memcpy(control.buf + CMSG_SPACE(sizeof(uint16_t)), extra.buf, (size_t)extra.len);
        Py_BEGIN_ALLOW_THREADS
        sent = sendmsg(fd, &m, MSG_DONTWAIT) < 0 ? -1 : (int)n;
        Py_END_ALLOW_THREADS
    } else {
        for (Py_ssize_t i = 0; i < n; i++) {
            msgs[i].msg_hdr.msg_name = addr.buf;
            msgs[i].msg_hdr.msg_namelen = (socklen_t)addr.len;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            /* The kernel only reads it: one buffer serves every message. */
            msgs[i].msg_hdr.msg_control = extra.len ? extra.buf : NULL;
            msgs[i].msg_hdr.msg_controllen = (size_t)extra.len;
        }
        Py_BEGIN_ALLOW_THREADS
        sent = n ? sendmmsg(fd, msgs, (unsigned int)n, MSG_DONTWAIT) : 0;
        Py_END_ALLOW_THREADS
    }
    if (sent < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = PyLong_FromLong(sent);
done:
    for (Py_ssize_t i = 0; i < held; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(iov);
    PyMem_Free(msgs);
    PyBuffer_Release(&addr);
    if (extra.obj != NULL)
        PyBuffer_Release(&extra);
    Py_DECREF(seq);
    return result;
}

/* send_each(fd, data, address, controls) -> tuple of (bytes sent, or -errno)
 *
 * One copy of data to the packed sockaddr address per control in controls
 * (packed cmsgs: the IP_PKTINFO / IPV6_PKTINFO naming one interface), in order,
 * one sendmsg each: send_all's round over every interface in one call. A copy
 * the kernel refuses does not stop the others; its errno is its result. */
PyObject *
mcastio_send_each(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "send_each(fd, data, address, controls)");
        return NULL;
    }
    int fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    PyObject *controls = args[3];
    if (!PyTuple_Check(controls)) {
        PyErr_SetString(PyExc_TypeError, "controls must be a tuple of bytes");
        return NULL;
    }
    Py_buffer data, addr;
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[2], &addr, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(controls);
    PyObject *result = PyTuple_New(n);
    if (result == NULL)
        goto done;
    struct iovec iov = {data.buf, (size_t)data.len};
    struct msghdr m = {0};
    m.msg_name = addr.buf;
    m.msg_namelen = (socklen_t)addr.len;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *control = PyTuple_GET_ITEM(controls, i);
        if (!PyBytes_Check(control)) {
            PyErr_SetString(PyExc_TypeError, "controls must be a tuple of bytes");
            Py_CLEAR(result);
            goto done;
        }
        m.msg_control = PyBytes_AS_STRING(control);
        m.msg_controllen = (size_t)PyBytes_GET_SIZE(control);
        ssize_t sent = sendmsg(fd, &m, MSG_DONTWAIT);
        PyObject *value = PyLong_FromSsize_t(sent < 0 ? -(ssize_t)errno : sent);
        if (value == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyTuple_SET_ITEM(result, i, value);
    }
done:
    PyBuffer_Release(&addr);
    PyBuffer_Release(&data);
    return result;
}
