"""Browser and JS tests of the viewer: a package, so their Chromium and servers (package-scoped
fixtures) stop before the next folder's tests run; playwright's sync API keeps an event loop
running while it is open."""
