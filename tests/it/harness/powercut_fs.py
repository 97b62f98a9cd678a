"""A FUSE file system that loses what was not synced when its daemon is killed: a power cut.

Usage: python3 powercut_fs.py BACKING MOUNTPOINT (runs in the foreground until killed).

It passes through to BACKING, except for file data: writes and truncations stay in memory (dirty
4 KiB pages per inode, and the file's size), reads see them, and only fsync/fdatasync of a file
writes its dirty pages to the backing file and fsyncs it there. So after SIGKILL, BACKING holds
exactly what a disk would after a power cut: everything synced, nothing else. Unlike a real disk
it never tears a page or reorders writes within a sync: a cut loses whole unsynced writes.

Simplification: metadata (create, mkdir, rename, unlink, chmod, times) passes straight through,
as if every directory change were synced at once; a file created and never synced survives a cut
empty. Mounted with direct_io and no kernel attribute caching, so every read and write reaches
this daemon and the kernel's page cache holds nothing a cut would keep. Byte-range and flock locks
are not implemented here, so the kernel keeps them locally, which is all one mount needs.
"""

import errno
import os
import sys

try:
    try:
        from fusepy import FUSE, FuseOSError  # Debian's python3-fusepy
    except ImportError:
        from fuse import FUSE, FuseOSError  # PyPI's fusepy
except Exception as e:  # a missing module, or fusepy finding no libfuse2
    sys.stderr.write(
        "powercut_fs: FUSE for Python is missing (%s): apt-get install python3-fusepy "
        "(it brings libfuse2; scripts/test.sh installs it)\n" % e
    )
    sys.exit(3)

PAGE = 4096


class Inode:
    """What the (simulated) page cache holds for one file that a sync has not written yet."""

    def __init__(self, size):
        self.size = size  # the size readers see
        # Backing bytes at or past this offset were cut off by a truncation since the last sync:
        # they read as zeros until a sync makes the backing file agree.
        self.floor = size
        self.pages = {}  # page index -> bytearray(PAGE), written since the last sync

    def page(self, fd, index):
        dirty = self.pages.get(index)
        if dirty is not None:
            return dirty
        start = index * PAGE
        data = os.pread(fd, PAGE, start) if start < self.floor else b""
        data = data[: max(0, self.floor - start)]
        return data + bytes(PAGE - len(data))


class PowerCutFs:
    use_ns = True

    def __init__(self, backing):
        self.backing = backing
        self.inodes = {}  # (st_dev, st_ino) of the backing file -> Inode
        self.handles = {}  # fh -> (fd, key)

    def __call__(self, op, *args):
        method = getattr(self, op, None)
        if method is None:
            raise FuseOSError(errno.ENOSYS)
        try:
            return method(*args)
        except FuseOSError:
            raise
        except OSError as e:
            raise FuseOSError(e.errno or errno.EIO)

    def real(self, path):
        return os.path.join(self.backing, path.lstrip("/"))

    def inode(self, fd):
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key not in self.inodes:
            self.inodes[key] = Inode(st.st_size)
        return key, self.inodes[key]

    def handle(self, fh):
        fd, key = self.handles[fh]
        return fd, self.inodes[key]

    # Files: data in memory until fsync.

    def open(self, path, flags):
        # The backing file is always opened read-write (a sync writes through whichever handle
        # asks), without O_APPEND (pwrite would ignore offsets) and without O_TRUNC (a
        # truncation is data, kept in memory like a write).
        fd = os.open(self.real(path), os.O_RDWR)
        key, inode = self.inode(fd)
        if flags & os.O_TRUNC:
            self.cut_to(fd, inode, 0)
        self.handles[fd] = (fd, key)
        return fd

    def create(self, path, mode, fi=None):
        real = self.real(path)
        fd = os.open(real, os.O_RDWR | os.O_CREAT, mode)
        st = os.fstat(fd)
        # The kernel asks to create only what does not exist: a file of an inode number seen
        # before is a new file, whatever was held for the old one.
        self.inodes.pop((st.st_dev, st.st_ino), None)
        key, _ = self.inode(fd)
        self.handles[fd] = (fd, key)
        return fd

    def read(self, path, size, offset, fh):
        fd, inode = self.handle(fh)
        end = min(offset + size, inode.size)
        if offset >= end:
            return b""
        out = bytearray()
        for index in range(offset // PAGE, (end - 1) // PAGE + 1):
            out += inode.page(fd, index)
        start = offset - (offset // PAGE) * PAGE
        return bytes(out[start : start + end - offset])

    def write(self, path, data, offset, fh):
        fd, inode = self.handle(fh)
        done = 0
        while done < len(data):
            at = offset + done
            index, within = divmod(at, PAGE)
            page = inode.pages.get(index)
            if page is None:
                page = bytearray(inode.page(fd, index))
                inode.pages[index] = page
            n = min(PAGE - within, len(data) - done)
            page[within : within + n] = data[done : done + n]
            done += n
        inode.size = max(inode.size, offset + len(data))
        return len(data)

    def cut_to(self, fd, inode, length):
        if length < inode.size:
            last = length // PAGE
            for index in [i for i in inode.pages if i > last or i * PAGE >= length]:
                del inode.pages[index]
            if length % PAGE and last in inode.pages:
                page = inode.pages[last]
                page[length % PAGE :] = bytes(PAGE - length % PAGE)
            inode.floor = min(inode.floor, length)
        inode.size = length

    def truncate(self, path, length, fh=None):
        if fh is not None:
            fd, inode = self.handle(fh)
            self.cut_to(fd, inode, length)
            return 0
        fd = os.open(self.real(path), os.O_RDWR)
        try:
            _, inode = self.inode(fd)
            self.cut_to(fd, inode, length)
        finally:
            os.close(fd)
        return 0

    def fsync(self, path, datasync, fh):
        fd, inode = self.handle(fh)
        if inode.floor < os.fstat(fd).st_size:
            os.ftruncate(fd, inode.floor)
        for index in sorted(inode.pages):
            start = index * PAGE
            os.pwrite(fd, bytes(inode.pages[index][: inode.size - start]), start)
        os.ftruncate(fd, inode.size)
        os.fsync(fd)
        inode.pages.clear()
        inode.floor = inode.size
        return 0

    def flush(self, path, fh):
        return 0  # close(2) is no sync

    def release(self, path, fh):
        self.handles.pop(fh, None)
        os.close(fh)  # what is not synced stays in memory, as in a page cache
        return 0

    def getattr(self, path, fh=None):
        if isinstance(fh, int) and fh in self.handles:
            st = os.fstat(self.handles[fh][0])
        else:
            st = os.lstat(self.real(path))
        attrs = {
            key: getattr(st, key)
            for key in (
                "st_mode",
                "st_nlink",
                "st_uid",
                "st_gid",
                "st_size",
                "st_atime_ns",
                "st_mtime_ns",
                "st_ctime_ns",
                "st_ino",
            )
        }
        for key in ("st_atime", "st_mtime", "st_ctime"):
            attrs[key] = attrs.pop(key + "_ns")
        inode = self.inodes.get((st.st_dev, st.st_ino))
        if inode is not None:
            attrs["st_size"] = inode.size
        return attrs

    # Metadata: straight through (see the module's doc).

    def access(self, path, amode):
        if not os.access(self.real(path), amode):
            raise FuseOSError(errno.EACCES)
        return 0

    def statfs(self, path):
        st = os.statvfs(self.real(path))
        return {
            key: getattr(st, key)
            for key in (
                "f_bsize",
                "f_frsize",
                "f_blocks",
                "f_bfree",
                "f_bavail",
                "f_files",
                "f_ffree",
                "f_favail",
                "f_flag",
                "f_namemax",
            )
        }

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self.real(path))

    def mkdir(self, path, mode):
        return os.mkdir(self.real(path), mode)

    def rmdir(self, path):
        return os.rmdir(self.real(path))

    def unlink(self, path):
        return os.unlink(self.real(path))

    def rename(self, old, new):
        return os.rename(self.real(old), self.real(new))

    def chmod(self, path, mode):
        return os.chmod(self.real(path), mode)

    def chown(self, path, uid, gid):
        return os.chown(self.real(path), uid, gid)

    def utimens(self, path, times=None):
        return os.utime(self.real(path), ns=times)

    def fsyncdir(self, path, datasync, fh):
        return 0  # metadata is never held back


def main():
    backing, mountpoint = sys.argv[1:3]
    FUSE(
        PowerCutFs(os.path.abspath(backing)),
        mountpoint,
        foreground=True,
        nothreads=True,
        direct_io=True,
        hard_remove=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        big_writes=True,
        fsname="powercut",
    )


if __name__ == "__main__":
    main()
