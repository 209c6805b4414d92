# frozen_string_literal: true

# A one-file Rails 6.1 application (Debian's ruby-railties, ruby-actionpack,
# ruby-actionview, ruby-actioncable) using the pushgate bridge as an app
# would: config/cable.yml says `adapter: nsq`, pages carry the bridge's meta
# tag and Turbo stream element, broadcasts go through ActionCable.server.
# Debian has no turbo-rails, so a Turbo Stream broadcast is rendered here as
# turbo-rails' broadcast_append_to renders it.
#
#   ruby app.rb page USER STREAMABLE...       the page, rendered by Action View
#   ruby app.rb sign STREAMABLE...            the signed stream name
#   ruby app.rb append TEXT STREAMABLE...     a Turbo Stream "append" to #messages, broadcast
#   ruby app.rb broadcast STREAM JSON         ActionCable.server.broadcast(STREAM, JSON)
#
# Settings come from the environment: PUSHGATE_CABLE_URL, PUSHGATE_JWT_SECRET,
# PUSHGATE_TURBO_STREAMS_SECRET, PUSHGATE_NSQD_HTTP_ADDRESS, CABLE_CHANNEL_PREFIX.
$LOAD_PATH.unshift File.expand_path("../../../bridges/rails/lib", __dir__)

require "rails"
require "action_controller/railtie"
require "action_view/railtie"
require "action_cable/engine"
require "pushgate"

class CableApp < Rails::Application
  config.root = __dir__
  config.eager_load = false
  config.secret_key_base = "0" * 64
  config.logger = Logger.new($stderr)
  config.log_level = :warn
end

Rails.application.initialize!

PAGE = <<~ERB
  <!DOCTYPE html>
  <html>
  <head>
    <meta charset="utf-8">
    <title>Room</title>
    <%= pushgate_cable_meta_tag(user) %>
    <script type="module" src="/turbo-rails.js"></script>
  </head>
  <body>
    <h1>Room</h1>
    <%= pushgate_turbo_stream_from(*streamables) %>
    <div id="messages"></div>
  </body>
  </html>
ERB

APPEND = <<~ERB
  <turbo-stream action="append" target="messages"><template><p><%= text %></p></template></turbo-stream>
ERB

case ARGV.shift
when "page"
  user = ARGV.shift
  puts ActionController::Base.render(inline: PAGE, locals: { user: user, streamables: ARGV })
when "sign"
  puts Pushgate::Cable.signed_stream_name(*ARGV)
when "append"
  text = ARGV.shift
  html = ActionController::Base.render(inline: APPEND, locals: { text: text })
  ActionCable.server.broadcast(Pushgate::Cable.stream_name_from(ARGV), html)
  print html
when "broadcast"
  stream, json = ARGV
  ActionCable.server.broadcast(stream, JSON.parse(json))
  puts "broadcast"
else
  warn "usage: app.rb page USER STREAMABLE... | sign STREAMABLE... | append TEXT STREAMABLE... | broadcast STREAM JSON"
  exit 2
end
