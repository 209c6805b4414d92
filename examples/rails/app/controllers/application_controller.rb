# frozen_string_literal: true

class ApplicationController < ActionController::Base
  # A request carrying X-Socket-ID (the gateway connection id a page got in
  # its welcome, as @anycable/web sends it) makes that id the current socket:
  # broadcasts made with to_others: true while the request runs skip it.
  include Pushgate::Cable::SocketId
end
