<!-- placeholder: hopcast.js -->
