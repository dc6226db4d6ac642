<!-- placeholder: two-way.js -->
